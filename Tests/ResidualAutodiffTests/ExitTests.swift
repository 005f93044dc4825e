import Testing
import Foundation
import ResidualAutodiff

/// Shape mismatches are programmer errors: the process stops with a message naming the op and both
/// shapes. These run each case in a child process (Swift Testing exit tests).
@Suite struct ExitTests {
    func stderr(_ result: ExitTest.Result?) -> String {
        String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
    }

    @Test func matmulMismatch() async {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            _ = matmul(Tensor(zeros: [4, 3]), Tensor(zeros: [5, 2]))
        }
        #expect(stderr(r).contains("matmul: [4, 3] x [5, 2]"))
    }

    @Test func broadcastMismatch() async {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            _ = Tensor(zeros: [2, 3]) + Tensor(zeros: [4])
        }
        #expect(stderr(r).contains("add: shapes [2, 3] and [4] do not broadcast"))
    }

    @Test func convolutionChannelMismatch() async {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            _ = conv2d(Tensor(zeros: [1, 3, 8, 8]), Tensor(zeros: [16, 4, 3, 3]), padding: 1)
        }
        #expect(stderr(r).contains("conv2d: input [1, 3, 8, 8], weight [16, 4, 3, 3]"))
    }

    @Test func badLabel() async {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            _ = softmaxCrossEntropy(logits: Tensor(zeros: [2, 10]), labels: [3, 10])
        }
        #expect(stderr(r).contains("label 10 at index 1 is not in 0..<10"))
    }

    @Test func backwardTwice() async {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let w = Parameter(Tensor(ones: [3]))
            let tape = Tape()
            let loss = tape.record { sum(w.value * w.value) }
            tape.backward(loss)
            tape.backward(loss)
        }
        #expect(stderr(r).contains("already consumed"))
    }
}
