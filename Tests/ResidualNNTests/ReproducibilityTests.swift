import Testing
import Residual

/// The same seed gives bit-identical losses, weights, batch-norm statistics and momentum buffers
/// after a few training steps: run twice, and with 1, 2 and 3 threads (the default must not depend
/// on the thread count; docs/Reliability.md lists the reductions and how their order is fixed).
///
/// A CIFAR ResNet-8 (all the zoo's op kinds: conv, BN, ReLU, option-A shortcut, global pooling,
/// linear, cross-entropy) on 32 real Fashion-MNIST images per batch, augmented, 4 SGD steps.
/// The comparison can fail: a different seed gives different bits (checked too).
@Suite(.serialized) struct ReproducibilityTests {
    struct Run: Equatable {
        var losses: [UInt32]
        var state: [String: [UInt32]]
    }

    static let data: Dataset = try! Dataset.fashionMNIST(train: false).prefix(160)

    /// `threads: nil` leaves `Threading.threadCount` alone (for runs that overlap in time).
    static func train(threads: Int?, seed: UInt64 = 0, steps: Int = 4) -> Run {
        let saved = Threading.threadCount
        if let threads { Threading.threadCount = threads }
        defer { if threads != nil { Threading.threadCount = saved } }
        let prep = Preprocessing(fitting: data)
        let loader = BatchLoader(data, batchSize: 32, shuffle: true, augment: true, preprocessing: prep, seed: seed)
        let model = withSeed(seed) { CIFARResNet(depth: 8, classes: 10, inputChannels: 1) }
        let parameters = model.namedParameters()
        let optimizer = SGD(parameters.map(\.1), learningRate: 0.1, momentum: 0.9, weightDecay: 1e-4)
        var losses: [UInt32] = []
        for batch in loader.batches(epoch: 0) where losses.count < steps {
            let tape = Tape()
            let loss = tape.record { softmaxCrossEntropy(logits: model(batch.images), labels: batch.labels) }
            tape.backward(loss)
            optimizer.step()
            optimizer.zeroGrad()
            losses.append(loss.scalar.bitPattern)
        }
        var state: [String: [UInt32]] = [:]
        for (name, t) in model.stateDict() { state[name] = t.scalars.map(\.bitPattern) }
        for (i, tensors) in optimizer.stateTensors() {
            for (key, t) in tensors { state["optimizer.\(parameters[i].0).\(key)"] = t.scalars.map(\.bitPattern) }
        }
        return Run(losses: losses, state: state)
    }

    /// The names of the tensors whose bits differ (for the failure message).
    static func differences(_ a: Run, _ b: Run) -> [String] {
        Set(a.state.keys).union(b.state.keys).filter { a.state[$0] != b.state[$0] }.sorted()
    }

    @Test func sameSeedSameBitsRunToRun() {
        let a = Self.train(threads: 2), b = Self.train(threads: 2)
        #expect(a.losses.count == 4 && a.losses.allSatisfy { Float(bitPattern: $0).isFinite })
        #expect(a.state.count > 30, "weights, BN statistics and momentum buffers")
        #expect(a.losses == b.losses)
        #expect(Self.differences(a, b).isEmpty, "\(Self.differences(a, b).prefix(5))")
    }

    @Test func sameBitsWithOneTwoAndThreeThreads() {
        let reference = Self.train(threads: 1)
        for threads in [2, 3] {
            let run = Self.train(threads: threads)
            #expect(run.losses == reference.losses,
                    "\(threads) threads: losses \(run.losses.map { Float(bitPattern: $0) }) vs \(reference.losses.map { Float(bitPattern: $0) })")
            let differing = Self.differences(run, reference)
            #expect(differing.isEmpty, "\(threads) threads: \(differing.count) tensors differ from 1 thread, first: \(differing.prefix(5))")
        }
    }

    @Test func differentSeedDifferentBits() {
        let a = Self.train(threads: 2, seed: 0, steps: 1), b = Self.train(threads: 2, seed: 1, steps: 1)
        #expect(a.losses != b.losses && !Self.differences(a, b).isEmpty)
    }

    /// Two runs at the same time, each with its own tape, model and optimizer, sharing the buffer
    /// pool and the kernels' worker threads: each gives the bits of a run alone. Under
    /// ThreadSanitizer (scripts/sanitize.sh) this is the two-concurrent-tapes race check.
    @Test func twoConcurrentRunsMatchARunAlone() async {
        let alone = Self.train(threads: 2, seed: 3, steps: 2)
        let runs = await withTaskGroup(of: Run.self) { group in
            for _ in 0..<2 { group.addTask { Self.train(threads: nil, seed: 3, steps: 2) } }
            var out: [Run] = []
            for await r in group { out.append(r) }
            return out
        }
        #expect(runs.count == 2)
        for r in runs {
            #expect(r.losses == alone.losses)
            #expect(Self.differences(r, alone).isEmpty, "\(Self.differences(r, alone).prefix(5))")
        }
    }
}
