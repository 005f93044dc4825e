import ResidualAutodiff

// Classification metrics over logits `[N, C]` and integer labels. (The loss,
// `softmaxCrossEntropy(logits:labels:labelSmoothing:)`, is an op in ResidualAutodiff.)

/// How many rows have their label among the `k` highest logits.
///
/// A label's rank is the number of logits above it plus the number of equal logits at lower
/// indices, so ties go to the lower class index, as `argmax` does: all-equal logits are not "all
/// correct". A NaN logit for the label counts as wrong.
public func topKCorrect(logits: Tensor, labels: [Int], k: Int = 1) -> Int {
    shapeCheck(logits.rank == 2 && logits.shape[0] == labels.count,
               "topKCorrect: logits \(describe(logits.shape)), \(labels.count) labels")
    let c = logits.shape[1]
    shapeCheck(k >= 1, "topKCorrect: k = \(k) must be at least 1")
    let x = logits.scalars
    var correct = 0
    for (i, label) in labels.enumerated() {
        shapeCheck(label >= 0 && label < c, "topKCorrect: label \(label) at index \(i) is not in 0..<\(c)")
        let row = x[(i * c)..<(i * c + c)], v = row[i * c + label]
        guard !v.isNaN else { continue }
        var rank = 0
        for (j, u) in zip(0..., row) where u > v || (u == v && j < label) { rank += 1 }
        if rank < k { correct += 1 }
    }
    return correct
}

/// Top-k error: the fraction of rows whose label is not among the `k` highest logits (the paper's
/// "top-1 err." and "top-5 err."). Ties as in ``topKCorrect(logits:labels:k:)``.
public func topKError(logits: Tensor, labels: [Int], k: Int = 1) -> Float {
    guard !labels.isEmpty else { return 0 }
    return 1 - Float(topKCorrect(logits: logits, labels: labels, k: k)) / Float(labels.count)
}
