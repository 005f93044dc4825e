import Foundation

/// Line charts as standalone SVG (no dependencies), laid out in panels side by side, like the
/// paper's Figure 6: thin dashed lines for training error, bold lines for test error.
struct PlotSeries {
    var label: String
    var color: String
    var dashed = false
    var lineWidth = 2.0
    /// Dots on the points: test errors come once per epoch, and a one-epoch run has a single point.
    var markers = false
    var points: [(x: Double, y: Double)]
}

struct PlotPanel {
    var title: String
    var xLabel: String
    var yLabel: String
    var series: [PlotSeries]
    var yRange: ClosedRange<Double>? = nil
}

enum SVGPlot {
    static let palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]

    /// "Nice" tick positions covering `lo...hi` (steps of 1, 2 or 5 times a power of ten).
    static func ticks(_ lo: Double, _ hi: Double, count: Int = 5) -> [Double] {
        guard hi > lo else { return [lo] }
        let raw = (hi - lo) / Double(count)
        let mag = pow(10, floor(log10(raw)))
        let step = [1.0, 2, 5, 10].map { $0 * mag }.first { $0 >= raw } ?? 10 * mag
        var t = (lo / step).rounded(.up) * step
        var out: [Double] = []
        while t <= hi + step * 1e-9 { out.append(abs(t) < step * 1e-9 ? 0 : t); t += step }
        return out
    }

    static func label(_ v: Double) -> String {
        if v == v.rounded() && abs(v) < 1e7 { return String(Int(v)) }
        var s = String(format: "%.3g", v)
        if s.contains("e") { s = String(format: "%.1e", v) }
        return s
    }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;")
    }

    static func render(_ panels: [PlotPanel], title: String? = nil, panelWidth: Double = 460,
                       panelHeight: Double = 340) -> String {
        let top = title == nil ? 0.0 : 30.0
        let width = panelWidth * Double(panels.count), height = panelHeight + top
        var s = """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" \
        viewBox="0 0 \(Int(width)) \(Int(height))" font-family="Helvetica, Arial, sans-serif" font-size="12">
        <rect width="100%" height="100%" fill="white"/>

        """
        if let title {
            s += "<text x=\"\(width / 2)\" y=\"20\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">\(escape(title))</text>\n"
        }
        for (pi, panel) in panels.enumerated() {
            let ox = Double(pi) * panelWidth
            let left = ox + 60, right = ox + panelWidth - 15, plotTop = top + 30, bottom = top + panelHeight - 45
            let allX = panel.series.flatMap { $0.points.map(\.x) }
            let allY = panel.series.flatMap { $0.points.map(\.y) }
            // Epochs start at 0: the axis does too, whatever the first logged point.
            let x0 = min(allX.min() ?? 0, 0), x1 = max(allX.max() ?? 1, x0 + 1e-9)
            let yr = panel.yRange ?? {
                let lo = allY.min() ?? 0, hi = allY.max() ?? 1
                return min(lo, 0)...(hi > lo ? hi * 1.05 : lo + 1)
            }()
            func px(_ x: Double) -> Double { left + (x - x0) / (x1 - x0) * (right - left) }
            func py(_ y: Double) -> Double {
                bottom - (min(max(y, yr.lowerBound), yr.upperBound) - yr.lowerBound) / (yr.upperBound - yr.lowerBound) * (bottom - plotTop)
            }
            s += "<text x=\"\((left + right) / 2)\" y=\"\(plotTop - 10)\" text-anchor=\"middle\" font-size=\"13\" font-weight=\"bold\">\(escape(panel.title))</text>\n"
            for t in ticks(yr.lowerBound, yr.upperBound) {
                s += "<line x1=\"\(left)\" y1=\"\(py(t))\" x2=\"\(right)\" y2=\"\(py(t))\" stroke=\"#e0e0e0\"/>"
                s += "<text x=\"\(left - 6)\" y=\"\(py(t) + 4)\" text-anchor=\"end\">\(label(t))</text>\n"
            }
            for t in ticks(x0, x1) {
                s += "<line x1=\"\(px(t))\" y1=\"\(bottom)\" x2=\"\(px(t))\" y2=\"\(bottom + 4)\" stroke=\"black\"/>"
                s += "<text x=\"\(px(t))\" y=\"\(bottom + 17)\" text-anchor=\"middle\">\(label(t))</text>\n"
            }
            s += "<rect x=\"\(left)\" y=\"\(plotTop)\" width=\"\(right - left)\" height=\"\(bottom - plotTop)\" fill=\"none\" stroke=\"black\"/>\n"
            s += "<text x=\"\((left + right) / 2)\" y=\"\(bottom + 35)\" text-anchor=\"middle\">\(escape(panel.xLabel))</text>\n"
            s += "<text x=\"\(ox + 16)\" y=\"\((plotTop + bottom) / 2)\" text-anchor=\"middle\" transform=\"rotate(-90 \(ox + 16) \((plotTop + bottom) / 2))\">\(escape(panel.yLabel))</text>\n"
            for series in panel.series where !series.points.isEmpty {
                let path = series.points.map { "\(String(format: "%.1f", px($0.x))),\(String(format: "%.1f", py($0.y)))" }.joined(separator: " ")
                s += "<polyline fill=\"none\" stroke=\"\(series.color)\" stroke-width=\"\(series.lineWidth)\"\(series.dashed ? " stroke-dasharray=\"5,4\"" : "") points=\"\(path)\"/>\n"
                if series.markers {
                    for p in series.points {
                        s += "<circle cx=\"\(String(format: "%.1f", px(p.x)))\" cy=\"\(String(format: "%.1f", py(p.y)))\" r=\"\(series.lineWidth + 0.8)\" fill=\"\(series.color)\"/>"
                    }
                    s += "\n"
                }
            }
            // Legend, top right inside the plot, on a white box so curves passing under it stay legible.
            var ly = plotTop + 16
            s += "<rect x=\"\(right - 156)\" y=\"\(plotTop + 4)\" width=\"152\" height=\"\(16 * panel.series.count + 4)\" fill=\"white\" fill-opacity=\"0.85\" stroke=\"#cccccc\"/>\n"
            for series in panel.series {
                let lx = right - 150
                s += "<line x1=\"\(lx)\" y1=\"\(ly - 4)\" x2=\"\(lx + 24)\" y2=\"\(ly - 4)\" stroke=\"\(series.color)\" stroke-width=\"\(series.lineWidth)\"\(series.dashed ? " stroke-dasharray=\"5,4\"" : "")/>"
                s += "<text x=\"\(lx + 30)\" y=\"\(ly)\">\(escape(series.label))</text>\n"
                ly += 16
            }
        }
        s += "</svg>\n"
        return s
    }
}
