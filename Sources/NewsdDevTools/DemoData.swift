import Foundation
import NewsdHTTP
import NewsdIngest
import NewsdKafka
import NewsdModel
import NewsdSystem
import NewsdTeacher

/// A synthetic, license-free news stream about a fictional portfolio: templated sentences about
/// earnings, orders, layoffs and guidance whose sentiment is known by construction. Used by the
/// demo (to train a first student and to stream) and by tests.
public enum DemoData {
    /// The demo portfolio.
    public static let portfolio: [Company] = [
        Company(id: "aurora", name: "Aurora Robotics", aliases: ["Aurora"], tickers: ["AURA"]),
        Company(id: "birch", name: "Birchwood Paper", aliases: ["Birchwood"], tickers: ["BRCH"]),
        Company(id: "cobalt", name: "Cobalt Mining", aliases: ["Cobalt Mines"], tickers: ["CBLT"]),
        Company(id: "delta", name: "Delta Shipping", aliases: ["Delta Lines"], tickers: ["DLTS"]),
        Company(id: "ember", name: "Ember Energy", aliases: ["Ember"], tickers: ["EMBR"]),
        Company(id: "fjord", name: "Fjord Telecom", aliases: ["Fjord"], tickers: ["FJRD"]),
        Company(id: "granite", name: "Granite Bank", aliases: ["Granite"], tickers: ["GRNB"]),
        Company(id: "harbor", name: "Harbor Foods", aliases: ["Harbor"], tickers: ["HRBF"]),
    ]

    static let positive = [
        "{c} reported a quarterly operating profit of EUR {a} mn, up from EUR {b} mn a year earlier .",
        "{c} won a EUR {a} mn order from a major European customer .",
        "{c} raised its full-year guidance after strong sales in the third quarter .",
        "Net sales of {c} increased by {p} % to EUR {a} mn .",
        "{t} shares rose {p} % after {c} signed a long-term supply agreement .",
        "{c} said its order backlog grew by {p} % compared with the previous year .",
        "Analysts upgraded {c} to buy after the company beat profit expectations .",
    ]
    static let negative = [
        "{c} will cut {n} jobs as demand for its products weakens .",
        "{c} swung to an operating loss of EUR {a} mn from a profit of EUR {b} mn .",
        "{c} lowered its outlook for the year, citing falling prices and weak demand .",
        "Net sales of {c} decreased by {p} % to EUR {a} mn .",
        "{t} shares fell {p} % after {c} issued a profit warning .",
        "{c} lost a EUR {a} mn contract after a dispute with its largest customer .",
        "{c} said it will close its plant in {city}, affecting {n} employees .",
    ]
    static let neutral = [
        "{c} will publish its interim report on {day} .",
        "The annual general meeting of {c} will be held in {city} on {day} .",
        "{c} has appointed a new chief financial officer, effective {day} .",
        "{c} operates {n} stores in {city} and the surrounding region .",
        "{t} is listed on the Nordic exchange in {city} .",
        "{c} employs about {n} people in {city} .",
        "The board of {c} proposes that the dividend be decided at the meeting in {city} .",
    ]
    static let cities = ["Helsinki", "Tampere", "Oulu", "Stockholm", "Oslo", "Turku", "Espoo", "Vaasa"]
    static let days = ["1 March", "15 April", "30 June", "12 August", "3 October", "20 November"]

    /// One labelled demo sentence.
    public struct Sentence: Sendable {
        /// The message id.
        public var id: String
        /// The sentence.
        public var text: String
        /// Its sentiment: positive, negative or neutral.
        public var label: String
        /// The company it is about.
        public var companyID: String
        /// Publication time.
        public var publishedAt: Date
        /// `wire` (news-agency sentences) or `social` (short posts with tickers and links).
        public var domain = "wire"
        /// What makes it easy or hard: clear, numbers, negation, hedge, mixed, slang, sarcasm.
        public var kind = "clear"
        /// What the demo teacher answers, one label per self-consistency sample (the true label
        /// three times, unless the teacher gets this one wrong).
        public var teacherVotes: [String] = []
    }

    /// `count` sentences, deterministic for `seed`. With `negativeShiftCompany`, that company's
    /// news turns mostly negative in the last third of the stream (so alerts have something to find).
    public static func sentences(count: Int, seed: UInt64 = 1, start: Date = Date(timeIntervalSince1970: 1_790_000_000),
                                 negativeShiftCompany: String? = "cobalt") -> [Sentence] {
        var rng = SplitMix64(seed: seed)
        return (0..<count).map { i in
            let company = portfolio[Int(rng.next() % UInt64(portfolio.count))]
            var roll = rng.next() % 100
            if company.id == negativeShiftCompany && i > count * 2 / 3 { roll = roll < 70 ? 40 : roll }   // 40: negative
            let (label, templates) = roll < 30 ? ("positive", positive) : roll < 55 ? ("negative", negative) : ("neutral", neutral)
            var text = templates[Int(rng.next() % UInt64(templates.count))]
            let useTicker = rng.next() % 4 == 0
            let a = Double(rng.next() % 900 + 20) / 10, b = Double(rng.next() % 900 + 20) / 10
            let values = ["{c}": useTicker && !text.contains("{t}") ? company.tickers[0] : (rng.next() % 3 == 0 ? company.aliases[0] : company.name),
                          "{t}": company.tickers[0], "{a}": String(format: "%.1f", a), "{b}": String(format: "%.1f", b),
                          "{p}": "\(rng.next() % 25 + 2)", "{n}": "\((rng.next() % 40 + 1) * 10)",
                          "{city}": cities[Int(rng.next() % UInt64(cities.count))], "{day}": days[Int(rng.next() % UInt64(days.count))]]
            for (k, v) in values { text = text.replacingOccurrences(of: k, with: v) }
            return Sentence(id: "demo-\(seed)-\(i)", text: text, label: label, companyID: company.id,
                            publishedAt: start.addingTimeInterval(Double(i) * 7))
        }
    }

    /// A JSON message for a sentence (sometimes without `companies`, so linking is exercised).
    public static func message(_ s: Sentence, includeCompanies: Bool) -> String {
        struct Message: Encodable {
            var id: String, text: String, source: String, publishedAt: String, companies: [String]?
            enum CodingKeys: String, CodingKey { case id, text, source, publishedAt = "published_at", companies }
        }
        let m = Message(id: s.id, text: s.text, source: "demo-wire", publishedAt: ISO8601DateFormatter().string(from: s.publishedAt),
                        companies: includeCompanies ? [s.companyID] : nil)
        return (try? JSONText.encode(m)) ?? "{}"
    }
}
