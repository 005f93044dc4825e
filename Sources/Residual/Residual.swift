// The umbrella module: `import Residual` brings in every library module of the package.
@_exported import ResidualKernels
@_exported import ResidualAutodiff
@_exported import ResidualNN
@_exported import ResidualOptimizers
@_exported import ResidualData
@_exported import ResidualZoo
