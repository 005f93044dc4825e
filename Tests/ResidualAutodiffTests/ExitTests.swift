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

/// Layout misuse stops with a message naming the problem and the shape.
@Suite struct LayoutExitTests {
    func stderr(_ result: ExitTest.Result?) -> String {
        String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
    }

    /// Code that is not layout-aware reading a channels-last tensor's storage as row-major.
    @Test func rawStorageOfChannelsLastTensor() async {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            let x = Tensor(zeros: [1, 3, 2, 2]).converted(to: .channelsLast)
            _ = x.storage.pointer
        }
        #expect(stderr(r).contains("a channels-last tensor [1, 3, 2, 2] was read as row-major"))
    }

    @Test func channelsLastNeedsRank4() async {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            _ = Tensor(zeros: [2, 3]).converted(to: .channelsLast)
        }
        #expect(stderr(r).contains("converted(to:): layout channelsLast needs rank 4 ([N, C, H, W]), got [2, 3]"))
        let s = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            _ = Tensor(zeros: [2, 3, 4], layout: .channelsLast)
        }
        #expect(stderr(s).contains("Tensor: layout channelsLast needs rank 4 ([N, C, H, W]), got shape [2, 3, 4]"))
    }

    @Test func addReLUShapeMismatch() async {
        let r = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            _ = addReLU(Tensor(zeros: [1, 2, 3, 3]), Tensor(zeros: [1, 4, 3, 3]))
        }
        #expect(stderr(r).contains("addReLU: shapes [1, 2, 3, 3] and [1, 4, 3, 3] differ"))
    }
}
