import Testing
import Residual

@Suite struct MetricsTests {
    @Test func topK() {
        let logits = Tensor(shape: [4, 4], scalars: [
            0.1, 0.9, 0.3, 0.2,     // label 1: rank 0
            0.5, 0.1, 0.4, 0.3,     // label 2: rank 1
            0.1, 0.2, 0.3, 0.4,     // label 0: rank 3
            1, 1, 1, 1,             // label 2: ties go to lower indices, rank 2
        ])
        let labels = [1, 2, 0, 2]
        #expect([1, 2, 3, 4].map { topKCorrect(logits: logits, labels: labels, k: $0) } == [1, 2, 3, 4])
        #expect(topKError(logits: logits, labels: labels) == 0.75)
        #expect(topKError(logits: logits, labels: labels, k: 5) == 0)
        // All-equal logits are right only for class 0 (as argmax), a NaN label logit never.
        #expect(topKCorrect(logits: Tensor(zeros: [3, 5]), labels: [0, 1, 4]) == 1)
        let nan = Tensor(shape: [1, 3], scalars: [0, .nan, 0])
        #expect(topKCorrect(logits: nan, labels: [1], k: 3) == 0)
        #expect(topKError(logits: Tensor(zeros: [0, 3]), labels: []) == 0)
    }
}
