/// Every benchmark family, in the order they run. Adding a family: create `<Family>Bench.swift`
/// with an `enum <Family>Bench: BenchmarkFamily` and add it here (docs/Kernels.md, "Benchmarks").
var registry: [any BenchmarkFamily.Type] { [
    PeakBench.self,
    GEMMBench.self,
    FlatBench.self,
    ConvBench.self,
    ModelBench.self,
] }
