import Foundation
import NewsdAlerts
import NewsdDistill
import NewsdOps
import NewsdPostgres
import NewsdSystem
import Testing

/// A seeded database for the analysts' tests: 40 days of news about five companies (ACME has
/// ten a day, some today), model v-a, an alert with drivers in the last month.
enum AnalystSeed {
    static func create() throws -> (url: String, db: PostgresConnection) {
        let url = try Harness.freshDatabase()
        let db = try PostgresConnection(url)
        try Schema.migrate(db)
        try db.executeScript("""
            SELECT setseed(0.25);
            INSERT INTO companies (id, name) VALUES ('ACME', 'Acme Corp'), ('BETA', 'Beta plc'), ('GAMMA', 'Gamma AG'), ('DELTA', 'Delta Inc'), ('EPS', 'Epsilon SA');
            INSERT INTO models (version, seq, status, label_counts, training, metrics, checksum, activated_at) VALUES
              ('v-a', 1, 'active', '{}', '{}', '{}', 'x', now() - interval '50 days');
            -- g = 0 (ACME, a minute from now) keeps "today" non-empty for ACME at any hour: from g = 1
            -- its sentences are 2.4 h apart, and the documented "one company's day" query found
            -- none in the first hours of a UTC day.
            INSERT INTO news_items (topic, partition, kafka_offset, text, published_at)
            SELECT 'seed', 0, g, 'Sentence ' || g || ' about ' || (ARRAY['ACME','BETA','GAMMA','DELTA','EPS'])[1 + g % 5] || ' and its quarter',
                   now() - (g / 50.0) * interval '1 day' + interval '1 minute'
            FROM generate_series(0, 1999) g;
            INSERT INTO predictions (item_id, model_version, label, probabilities, margin, entropy, predicted_at)
            SELECT id, 'v-a', l, jsonb_build_object('negative', CASE l WHEN 'negative' THEN 0.8 ELSE 0.1 END,
                                                    'neutral', CASE l WHEN 'neutral' THEN 0.8 ELSE 0.1 END,
                                                    'positive', CASE l WHEN 'positive' THEN 0.8 ELSE 0.1 END),
                   CASE WHEN r < 0.1 THEN 0.1 ELSE 0.7 END, 0.6, published_at
            FROM (SELECT id, published_at, random() AS r,
                         (ARRAY['negative','neutral','positive'])[1 + floor(random() * 3)::int] AS l FROM news_items) x;
            INSERT INTO mentions (item_id, company_id, matched_by, published_at)
            SELECT id, (ARRAY['ACME','BETA','GAMMA','DELTA','EPS'])[1 + kafka_offset % 5], 'name', published_at FROM news_items;
            INSERT INTO mentions (item_id, company_id, matched_by, published_at)
            SELECT id, 'BETA', 'name', published_at FROM news_items WHERE kafka_offset % 5 = 0 AND kafka_offset % 3 = 0;
            INSERT INTO alerts (company_id, rule, severity, state, verification, window_start, window_end, observed_share, baseline_share,
                                window_weight, window_negative, window_items, p_value, drivers_checked, drivers_confirmed, parameters, raised_by, raised_at)
            VALUES ('ACME', 'shift', 'warning', 'resolved', 'confirmed', now() - interval '10 days 1 hour', now() - interval '10 days',
                    0.7, 0.25, 20, 14, 20, 1e-6, 3, 3, '{}', 'seed', now() - interval '10 days');
            INSERT INTO alert_drivers (alert_id, rank, item_id, text, published_at, student_label, negative_probability, model_version, teacher_label, teacher_status)
            SELECT a.id, r, r, 'ACME shares plunged ' || r, a.raised_at, 'negative', 0.9, 'v-a', 'negative', 'labelled' FROM alerts a, generate_series(1, 3) r;
            """)
        return (url, db)
    }

    /// Rows where the daily or hourly rollup differs from an exact aggregate of the raw tables.
    static func mismatches(_ db: PostgresConnection) throws -> Int {
        var total = 0
        for (table, unit) in [("sentiment_daily", "day"), ("sentiment_hourly", "hour")] {
            let exact = """
                SELECT m.company_id, date_trunc('\(unit)', m.published_at, 'UTC') AS t, count(*)::int AS items,
                       count(*) FILTER (WHERE p.label = 'positive')::int AS positive, count(*) FILTER (WHERE p.label = 'negative')::int AS negative,
                       count(*) FILTER (WHERE p.label = 'neutral')::int AS neutral, round(sum((p.probabilities->>'negative')::float8)::numeric, 6) AS pn,
                       count(*) FILTER (WHERE p.margin < 0.2)::int AS low
                FROM mentions m CROSS JOIN LATERAL (SELECT * FROM predictions p WHERE p.item_id = m.item_id
                                                    ORDER BY p.withdrawn, p.predicted_at DESC, p.id DESC LIMIT 1) p
                GROUP BY 1, 2
                """
            let rollup = "SELECT company_id, \(unit) AS t, items, positive, negative, neutral, round(p_negative_sum::numeric, 6), low_confidence FROM \(table)"
            total += try db.query("SELECT count(*) AS n FROM ((\(unescaped: exact) EXCEPT \(unescaped: rollup)) UNION ALL (\(unescaped: rollup) EXCEPT \(unescaped: exact))) d")
                .single().decode("n", as: Int.self)
        }
        return total
    }
}

@Suite("Analysts: rollups, read-only role, documented queries, report")
struct AnalystsTests {
    @Test("rollups equal the raw aggregates after ingest, a rescore, a rollback and a delete; model agreement counts the rescored items")
    func rollupsStayCorrect() throws {
        let (_, db) = try AnalystSeed.create()
        try AnalystRollups.pass(db, lowConfidenceMargin: 0.2)
        #expect(try AnalystSeed.mismatches(db) == 0)
        let before = try db.query("SELECT sum(negative)::int AS n FROM sentiment_daily").single().decode("n", as: Int.self)

        // Model v-b is promoted and rescores 30% of the items, calling many of them negative.
        try db.execute("UPDATE models SET status = 'retired' WHERE version = 'v-a'")
        try db.execute("INSERT INTO models (version, seq, parent, status, label_counts, training, metrics, checksum, activated_at) VALUES ('v-b', 2, 'v-a', 'active', '{}', '{}', '{}', 'y', now())")
        let rescored = try db.execute("""
            INSERT INTO predictions (item_id, model_version, label, probabilities, margin, entropy, rescored)
            SELECT id, 'v-b', 'negative', '{"negative": 0.9, "neutral": 0.05, "positive": 0.05}', 0.85, 0.3, true FROM news_items WHERE id % 10 < 3
            """).affected
        let pass = try AnalystRollups.pass(db, lowConfidenceMargin: 0.2)
        #expect(pass.hours > 0)
        #expect(try AnalystSeed.mismatches(db) == 0)
        let after = try db.query("SELECT sum(negative)::int AS n FROM sentiment_daily").single().decode("n", as: Int.self)
        #expect(after > before)
        try AnalystRollups.refreshAgreement(db)
        let pair = try db.query("SELECT items, agreement FROM model_agreement WHERE version_a = 'v-a' AND version_b = 'v-b'").typed
        #expect(try pair.first?.decode("items", as: Int.self) == rescored)

        // Rolled back: v-b's predictions are withdrawn and the figures return to v-a's.
        #expect(try ModelRegistry.rollback(db) == "v-a")
        try AnalystRollups.pass(db, lowConfidenceMargin: 0.2)
        #expect(try AnalystSeed.mismatches(db) == 0)
        #expect(try db.query("SELECT sum(negative)::int AS n FROM sentiment_daily").single().decode("n", as: Int.self) == before)

        // A deleted item leaves its hours.
        try db.execute("DELETE FROM news_items WHERE id IN (SELECT id FROM news_items ORDER BY id LIMIT 25)")
        try AnalystRollups.pass(db, lowConfidenceMargin: 0.2)
        #expect(try AnalystSeed.mismatches(db) == 0)
        // Nothing left to do.
        #expect(try AnalystRollups.pass(db, lowConfidenceMargin: 0.2).hours == 0)
    }

    static func analystConnection(_ url: String, _ db: PostgresConnection) throws -> PostgresConnection {
        let role = "analyst_\(UUID().uuidString.prefix(8).lowercased())"
        try db.execute("CREATE ROLE \(role) LOGIN IN ROLE newsd_analyst")
        return try PostgresConnection(url.replacingOccurrences(of: "postgres@", with: "\(role)@"))
    }

    @Test("the analyst role reads every table and view it is given and can write nothing")
    func readOnlyRole() throws {
        let (url, db) = try AnalystSeed.create()
        try AnalystRollups.pass(db, lowConfidenceMargin: 0.2)
        let analyst = try Self.analystConnection(url, db)
        for object in ["companies", "news_items", "predictions", "mentions", "models", "alerts", "alert_drivers", "sentiment_hourly", "sentiment_daily",
                       "company_daily", "company_hourly", "company_sentences", "company_latest_sentences", "model_agreement", "alert_history",
                       "company_sentiment_daily", "latest_predictions"] {
            #expect(throws: Never.self, "\(object)") { _ = try analyst.execute("SELECT count(*) FROM \(object)") }
        }
        for statement in ["INSERT INTO companies (id, name) VALUES ('X', 'x')", "UPDATE predictions SET label = 'positive'",
                          "DELETE FROM alerts", "TRUNCATE sentiment_daily", "CREATE TABLE mine (x int)",
                          "REFRESH MATERIALIZED VIEW model_agreement", "SELECT count(*) FROM teacher_requests",
                          "SELECT count(*) FROM consumer_offsets", "INSERT INTO rollup_dirty_hours VALUES ('X', now())"] {
            do {
                _ = try analyst.execute(statement)
                Issue.record("the analyst role could run: \(statement)")
            } catch let e as PostgresError {
                #expect(e.sqlState == "42501", "\(statement): \(e)")
            }
        }
    }

    @Test("every example query of docs/analysts.md runs as the analyst role and returns rows")
    func documentedQueries() throws {
        let (url, db) = try AnalystSeed.create()
        try db.execute("""
            INSERT INTO models (version, seq, parent, status, label_counts, training, metrics, checksum, activated_at)
            VALUES ('v-b', 2, 'v-a', 'candidate', '{}', '{}', '{}', 'y', NULL)
            """)
        try db.execute("""
            INSERT INTO predictions (item_id, model_version, label, probabilities, margin, entropy, rescored)
            SELECT id, 'v-b', 'neutral', '{"negative": 0.2, "neutral": 0.6, "positive": 0.2}', 0.4, 0.9, true FROM news_items WHERE id % 4 = 0
            """)
        try AnalystRollups.pass(db, lowConfidenceMargin: 0.2)
        try AnalystRollups.refreshAgreement(db)
        let analyst = try Self.analystConnection(url, db)
        let markdown = try String(contentsOf: Harness.packageRoot.appendingPathComponent("docs/analysts.md"), encoding: .utf8)
        let queries = AnalystQueries.parse(markdown: markdown)
        #expect(queries.count >= 10)
        for q in queries {
            do {
                let rows = try analyst.execute(q.sql).rows.count
                #expect(rows > 0, "no rows: \(q.title)")
            } catch {
                Issue.record("\(q.title): \(error)")
            }
        }
    }

    @Test("newsd report: terminal table, self-contained HTML with chart and alert markers, checked in headless Chromium (DOM and screenshot pixels)")
    func report() throws {
        let (url, db) = try AnalystSeed.create()
        try AnalystRollups.pass(db, lowConfidenceMargin: 0.2)
        let dir = Harness.temporaryDirectory()
        let html = dir.appendingPathComponent("acme.html").path, png = dir.appendingPathComponent("acme.png").path
        let run = try DaemonProcess(arguments: ["report", "--company", "ACME", "--since", "30d", "--out", html, "--png", png], name: "report",
                                    environment: ["NEWSD_POSTGRES_URL": url], outputToLog: true)
        #expect(run.wait(timeout: 120) == 0, "\(run.logText.suffix(2000))")
        #expect(run.logText.contains("alert #"))
        let page = try String(contentsOfFile: html, encoding: .utf8)
        #expect(!page.contains("http://") || page.components(separatedBy: "http://").count == 2, "the page fetches something")   // only the SVG namespace
        #expect(!page.contains("<script"))
        // What the browser rendered.
        let dom = try HeadlessBrowser().dom(page: html)
        #expect(dom.contains("class=\"net-line\""))
        #expect(dom.components(separatedBy: "class=\"volume-bar\"").count - 1 >= 25)
        #expect(dom.contains("class=\"alert-marker\""))
        #expect(dom.contains("ACME shares plunged 1"))
        // The screenshot: the line's blue and the markers' red are on screen.
        let counts = try Self.colourCounts(png: png, colours: ["1f5fbf", "d62728"])
        #expect((counts["1f5fbf"] ?? 0) > 500, "\(counts)")
        #expect((counts["d62728"] ?? 0) > 50, "\(counts)")
    }

    @Test("newsd alerts list, ack, explain and backtest on a stored alert and history")
    func alertCommands() throws {
        let (url, db) = try AnalystSeed.create()
        let id: Int64 = try db.query("SELECT id FROM alerts").single().decode("id")
        func newsd(_ arguments: [String]) throws -> (status: Int32, output: String) {
            let run = try DaemonProcess(arguments: arguments, name: "alerts-\(arguments[1])", environment: ["NEWSD_POSTGRES_URL": url], outputToLog: true)
            let status = run.wait(timeout: 120) ?? -1
            return (status, run.logText)
        }
        let list = try newsd(["alerts", "list", "--since", "30d", "--company", "ACME"])
        #expect(list.status == 0 && list.output.contains("ACME") && list.output.contains("resolved"), "\(list.output)")
        #expect(try newsd(["alerts", "ack", String(id), "--by", "tester"]).status == 0)
        #expect(try db.query("SELECT acked_by FROM alerts WHERE id = \(id)").single().decode("acked_by", as: String.self) == "tester")
        let explain = try newsd(["alerts", "explain", String(id)])
        #expect(explain.status == 0, "\(explain.output)")
        for piece in ["Beta-Binomial tail", "negative share 0.700 against baseline 0.250", "ACME shares plunged 1", "acknowledged"] {
            #expect(explain.output.contains(piece), "\(piece) not in \(explain.output)")
        }
        #expect(try newsd(["alerts", "explain", "999999"]).status != 0)
        let backtest = try newsd(["alerts", "backtest", "--since", "30d"])
        #expect(backtest.status == 0 && backtest.output.contains("per company-day"), "\(backtest.output)")
    }

    /// Pixels of each colour (within a small tolerance) in a PNG, decoded by Python's standard
    /// library (zlib; 8-bit RGB or RGBA, as Chromium writes).
    static func colourCounts(png: String, colours: [String]) throws -> [String: Int] {
        let script = """
        import sys, zlib, struct
        data = open(sys.argv[1], 'rb').read()
        pos, idat, w, h, ct = 8, b'', 0, 0, 0
        while pos < len(data):
            n, kind = struct.unpack('>I4s', data[pos:pos+8]); body = data[pos+8:pos+8+n]; pos += 12 + n
            if kind == b'IHDR': w, h, depth, ct = struct.unpack('>IIBB', body[:10])
            elif kind == b'IDAT': idat += body
        bpp = 4 if ct == 6 else 3
        raw = zlib.decompress(idat); stride = w * bpp; prev = bytearray(stride); rows = []; i = 0
        for y in range(h):
            f = raw[i]; line = bytearray(raw[i+1:i+1+stride]); i += 1 + stride
            for x in range(stride):
                a = line[x-bpp] if x >= bpp else 0; b = prev[x]; c = prev[x-bpp] if x >= bpp else 0
                if f == 1: line[x] = (line[x] + a) & 255
                elif f == 2: line[x] = (line[x] + b) & 255
                elif f == 3: line[x] = (line[x] + (a + b) // 2) & 255
                elif f == 4:
                    p = a + b - c; pa, pb, pc = abs(p-a), abs(p-b), abs(p-c)
                    line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
            rows.append(line); prev = line
        targets = [(t, tuple(int(t[k:k+2], 16) for k in (0, 2, 4))) for t in sys.argv[2:]]
        counts = {t: 0 for t, _ in targets}
        for line in rows:
            for x in range(0, stride, bpp):
                px = line[x:x+3]
                for t, rgb in targets:
                    if abs(px[0]-rgb[0]) < 24 and abs(px[1]-rgb[1]) < 24 and abs(px[2]-rgb[2]) < 24: counts[t] += 1
        print(' '.join('%s=%d' % kv for kv in counts.items()))
        """
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", "-c", script, png] + colours
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw TestFailure("PNG decode failed: \(text)") }
        var counts: [String: Int] = [:]
        for pair in text.split(whereSeparator: \.isWhitespace) {
            let kv = pair.split(separator: "=")
            if kv.count == 2 { counts[String(kv[0])] = Int(kv[1]) }
        }
        return counts
    }
}
