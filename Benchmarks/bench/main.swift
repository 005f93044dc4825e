import Residual
import ResidualTestSupport
let x = Tensor(shape: [2, 3, 2, 2], scalars: (0..<24).map { Float($0) })
print(x - Tensor(shape: [1, 3, 1, 1], scalars: [100, 200, 300]))
print(sum(x, axes: [0, 2, 3]))
