import Foundation
import NewsdPostgres

/// `newsd report`: one company's daily sentiment, volume and alerts, as a terminal table and a
/// self-contained HTML page (inline SVG drawn here: no script, no CDN, no external file).
public struct CompanyReport: Sendable {
    /// One day of the company.
    public struct Day: Sendable, Equatable {
        /// The UTC day.
        public var day: Date
        /// Items, by label.
        public var items: Int, positive: Int, negative: Int, neutral: Int
        /// (positive - negative) / items.
        public var net: Double
    }
    /// The company and its name.
    public var companyID: String, companyName: String?
    /// The period.
    public var since: Date, until: Date
    /// Days with items, in order.
    public var days: [Day]
    /// Alerts raised in the period, with their drivers.
    public var alerts: [(alert: AlertRecord, drivers: [AlertDriver])]

    /// Reads the report's data from the rollups and the alerts.
    public static func load(_ db: PostgresConnection, company: String, since: Date, until: Date = Date()) throws -> CompanyReport {
        let name: String? = try db.query("SELECT name FROM companies WHERE id = \(company)").typed.first?.decode("name")
        let days = try db.query("""
            SELECT day, items, positive, negative, neutral, coalesce(net_sentiment, 0)::float8 AS net FROM company_daily
            WHERE company_id = \(company) AND day >= date_trunc('day', \(since)::timestamptz, 'UTC') AND day <= \(until) ORDER BY day
            """).typed.map { r in
            Day(day: try r.decode("day"), items: try r.decode("items"), positive: try r.decode("positive"), negative: try r.decode("negative"),
                neutral: try r.decode("neutral"), net: try r.decode("net"))
        }
        let alerts = try AlertStore.list(db, since: since, company: company).filter { $0.raisedAt <= until }.reversed().map { a in
            (alert: a, drivers: try AlertStore.drivers(db, alert: a.id))
        }
        return CompanyReport(companyID: company, companyName: name, since: since, until: until, days: days, alerts: alerts)
    }

    static func dayString(_ d: Date) -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX"); f.timeZone = TimeZone(identifier: "UTC"); f.dateFormat = "yyyy-MM-dd"
        return f.string(from: d)
    }

    static func timeString(_ d: Date) -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX"); f.timeZone = TimeZone(identifier: "UTC"); f.dateFormat = "yyyy-MM-dd HH:mm 'UTC'"
        return f.string(from: d)
    }

    /// The terminal table: one line per day, alerts marked on their day, then the alerts.
    public func table() -> String {
        var out = "\(companyName.map { "\($0) (\(companyID))" } ?? companyID): \(Self.dayString(since)) .. \(Self.dayString(until))\n"
        out += "day          items  positive  negative  neutral     net  alerts\n"
        for d in days {
            let marks = alerts.filter { Self.dayString($0.alert.raisedAt) == Self.dayString(d.day) }.map { "#\($0.alert.id)" }.joined(separator: " ")
            out += String(format: "%@ %6d %9d %9d %8d %+7.3f  %@\n", Self.dayString(d.day), d.items, d.positive, d.negative, d.neutral, d.net, marks)
        }
        if days.isEmpty { out += "(no items in the period)\n" }
        for (a, drivers) in alerts {
            out += "\nalert #\(a.id) \(Self.timeString(a.raisedAt)) \(a.severity) \(a.state), \(a.verification): "
            out += String(format: "%.0f%% negative vs %.0f%% baseline, %d items\n", a.observedShare * 100, a.baselineShare * 100, a.windowItems)
            for d in drivers { out += "  \(d.rank). [student \(d.studentLabel), teacher \(d.teacherLabel ?? "-")] \(String(d.text.prefix(120)))\n" }
        }
        return out
    }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }

    /// The chart: volume bars, the net-sentiment line (-1..1) and a marker per alert, as SVG.
    public func svg(width: Double = 960, height: Double = 360) -> String {
        let left = 56.0, right = 16.0, top = 20.0, bottom = 40.0
        let plotW = width - left - right, plotH = height - top - bottom
        let start = Calendar.utc.startOfDay(for: since), end = max(until, start.addingTimeInterval(86_400))
        let span = max(86_400, end.timeIntervalSince(start))
        func x(_ d: Date) -> Double { left + plotW * min(1, max(0, d.timeIntervalSince(start) / span)) }
        func y(_ net: Double) -> Double { top + plotH * (1 - (net + 1) / 2) }
        let maxItems = Double(max(1, days.map(\.items).max() ?? 1))
        let barW = max(2, plotW * 86_400 / span * 0.7)
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"chart\" width=\"\(Int(width))\" height=\"\(Int(height))\" viewBox=\"0 0 \(Int(width)) \(Int(height))\" role=\"img\" aria-label=\"daily net sentiment and volume\">\n"
        s += "<rect x=\"0\" y=\"0\" width=\"\(Int(width))\" height=\"\(Int(height))\" fill=\"#ffffff\"/>\n"
        // Axes and grid: net sentiment -1, 0, +1.
        for v in [-1.0, -0.5, 0, 0.5, 1] {
            s += String(format: "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%@\" stroke-width=\"1\"/>\n", left, y(v), left + plotW, y(v), v == 0 ? "#888888" : "#e4e4e4")
            s += String(format: "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"end\" fill=\"#444\">%+.1f</text>\n", left - 6, y(v) + 4, v)
        }
        // Volume bars (their own scale: the bottom third).
        for d in days {
            let h = plotH / 3 * Double(d.items) / maxItems
            s += String(format: "<rect class=\"volume-bar\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#9db7d5\"><title>%@: %d items</title></rect>\n",
                        x(d.day.addingTimeInterval(43_200)) - barW / 2, top + plotH - h, barW, h, Self.dayString(d.day), d.items)
        }
        // The net-sentiment line through the days' midpoints.
        if !days.isEmpty {
            let points = days.map { String(format: "%.1f,%.1f", x($0.day.addingTimeInterval(43_200)), y($0.net)) }
            s += "<polyline class=\"net-line\" points=\"\(points.joined(separator: " "))\" fill=\"none\" stroke=\"#1f5fbf\" stroke-width=\"2.5\"/>\n"
            for d in days {
                s += String(format: "<circle class=\"net-point\" cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"#1f5fbf\"><title>%@: net %+.3f</title></circle>\n",
                            x(d.day.addingTimeInterval(43_200)), y(d.net), Self.dayString(d.day), d.net)
            }
        }
        // Alerts: a red marker at the raise time, a band over the window.
        for (a, _) in alerts {
            let ax = x(a.raisedAt)
            s += String(format: "<line class=\"alert-line\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#d62728\" stroke-width=\"2\" stroke-dasharray=\"4 3\"/>\n", ax, top, ax, top + plotH)
            s += String(format: "<path class=\"alert-marker\" data-alert=\"%d\" d=\"M %.1f %.1f l 8 -14 l -16 0 z\" fill=\"#d62728\"><title>alert #%d %@: %.0f%% negative vs %.0f%%</title></path>\n",
                        a.id, ax, top + 14, a.id, Self.escape(a.state), a.observedShare * 100, a.baselineShare * 100)
        }
        // Day labels: about eight.
        let step = max(1, days.count / 8)
        for (i, d) in days.enumerated() where i % step == 0 {
            s += String(format: "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"middle\" fill=\"#444\">%@</text>\n",
                        x(d.day.addingTimeInterval(43_200)), top + plotH + 16, String(Self.dayString(d.day).dropFirst(5)))
        }
        s += "</svg>"
        return s
    }

    /// The self-contained page.
    public func html() -> String {
        let title = "Sentiment report: \(companyName ?? companyID)"
        var h = """
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8"><title>\(Self.escape(title))</title>
        <style>
        body { font-family: "DejaVu Sans", sans-serif; margin: 24px; color: #222; }
        table { border-collapse: collapse; font-size: 13px; } td, th { border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: right; }
        th { background: #f2f2f2; } td.text { text-align: left; max-width: 760px; }
        .alert { border-left: 4px solid #d62728; padding: 4px 12px; margin: 12px 0; }
        .legend span { margin-right: 18px; font-size: 13px; }
        </style></head><body>
        <h1>\(Self.escape(title))</h1>
        <p>\(Self.escape(companyID)) · \(Self.dayString(since)) to \(Self.dayString(until)) · \(days.reduce(0) { $0 + $1.items }) items · \(alerts.count) alert\(alerts.count == 1 ? "" : "s")</p>
        <p class="legend"><span style="color:#1f5fbf">━ net sentiment (positive − negative) / items</span><span style="color:#7f9fc5">▮ volume</span><span style="color:#d62728">▼ alert</span></p>
        \(svg())

        """
        h += "<h2>Alerts</h2>\n"
        if alerts.isEmpty { h += "<p>No alert in the period.</p>\n" }
        for (a, drivers) in alerts {
            h += "<div class=\"alert\" id=\"alert-\(a.id)\"><h3>#\(a.id) · \(Self.timeString(a.raisedAt)) · \(a.severity) · \(Self.escape(a.state)) · \(Self.escape(a.verification))</h3>\n"
            h += String(format: "<p>%.0f%% negative in the window against %.0f%% baseline; %d items; p = %.2g; teacher confirmed %d of %d drivers.</p>\n",
                        a.observedShare * 100, a.baselineShare * 100, a.windowItems, a.pValue, a.driversConfirmed, a.driversChecked)
            h += "<table class=\"drivers\"><tr><th>#</th><th>student</th><th>P(neg)</th><th>teacher</th><th>sentence</th></tr>\n"
            for d in drivers {
                h += String(format: "<tr><td>%d</td><td>%@</td><td>%.2f</td><td>%@</td><td class=\"text\">%@</td></tr>\n",
                            d.rank, Self.escape(d.studentLabel), d.negativeProbability, Self.escape(d.teacherLabel ?? "–"), Self.escape(d.text))
            }
            h += "</table></div>\n"
        }
        h += "<h2>Days</h2>\n<table class=\"days\"><tr><th>day</th><th>items</th><th>positive</th><th>negative</th><th>neutral</th><th>net</th></tr>\n"
        for d in days {
            h += String(format: "<tr><td>%@</td><td>%d</td><td>%d</td><td>%d</td><td>%d</td><td>%+.3f</td></tr>\n", Self.dayString(d.day), d.items, d.positive, d.negative, d.neutral, d.net)
        }
        h += "</table>\n<p style=\"color:#888;font-size:12px\">newsd report, generated \(Self.timeString(Date())).</p>\n</body></html>\n"
        return h
    }

    /// Parses `30d`, `12h`, `90m` or `45s` into seconds.
    public static func parseSpan(_ text: String) -> Double? {
        guard let unit = text.last, let n = Double(text.dropLast()), n >= 0 else { return nil }
        switch unit {
        case "d": return n * 86_400
        case "h": return n * 3600
        case "m": return n * 60
        case "s": return n
        default: return nil
        }
    }
}

extension Calendar {
    /// The Gregorian calendar in UTC.
    static let utc: Calendar = {
        var c = Calendar(identifier: .gregorian)
        c.timeZone = TimeZone(identifier: "UTC")!
        return c
    }()
}
