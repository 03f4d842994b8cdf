import Foundation
import NewsdSystem

/// A demo stream hard enough to show what the loop learns: besides plain news it has sentences
/// whose label turns on numbers, negations, hedges or a mixed message, and half-way through the
/// stream the news changes kind, from agency wire sentences to short social-media posts with
/// tickers, slang and links. Its teacher is wrong on a configurable share of items, more often on
/// the hard ones, and sometimes splits its votes, as a real LLM does.
extension DemoData {
    /// A template: text with placeholders, and the label (nil: decided by the numbers {a} and {b},
    /// positive when a > b).
    struct Template {
        var text: String
        var label: String?
        var kind: String
    }

    static let wireTemplates: [Template] = {
        var t: [Template] = []
        t += positive.map { Template(text: $0, label: "positive", kind: "clear") }
        t += negative.map { Template(text: $0, label: "negative", kind: "clear") }
        t += neutral.map { Template(text: $0, label: "neutral", kind: "clear") }
        t += [
            // The numbers decide: a bigger figure this year is good news.
            Template(text: "{c}'s operating profit totalled EUR {a} mn, compared to EUR {b} mn in the corresponding period a year earlier .", label: nil, kind: "numbers"),
            Template(text: "Net sales of {c} amounted to EUR {a} mn in the first half, against EUR {b} mn in 2025 .", label: nil, kind: "numbers"),
            Template(text: "In January-June, {c} posted a result before taxes of EUR {a} mn ( EUR {b} mn ) .", label: nil, kind: "numbers"),
            Template(text: "{c}'s order intake was EUR {a} mn, while in the previous quarter it was EUR {b} mn .", label: nil, kind: "numbers"),
            // Negations turn the cue word around.
            Template(text: "{c} will not close its plant in {city} after all, the company said .", label: "positive", kind: "negation"),
            Template(text: "{c} said it no longer expects to cut jobs this year .", label: "positive", kind: "negation"),
            Template(text: "{c} did not reach its profit target for the year .", label: "negative", kind: "negation"),
            Template(text: "{c} no longer expects its net sales to grow in {year} .", label: "negative", kind: "negation"),
            Template(text: "{c} has not seen any weakening in demand so far .", label: "positive", kind: "negation"),
            // Hedges: a forecast carries its direction; an option considered carries none.
            Template(text: "{c} expects its net sales to increase slightly in {year} .", label: "positive", kind: "hedge"),
            Template(text: "{c} expects its operating profit to decline from last year's level .", label: "negative", kind: "hedge"),
            Template(text: "{c} may consider selling its unit in {city} if a suitable buyer is found .", label: "neutral", kind: "hedge"),
            Template(text: "{c} is evaluating whether to change its dividend policy .", label: "neutral", kind: "hedge"),
            Template(text: "According to {c}, profit could improve if raw material prices fall .", label: "neutral", kind: "hedge"),
            // Mixed news: the bottom line decides.
            Template(text: "{c}'s net sales rose {p} %, but its operating profit fell to EUR {a} mn .", label: "negative", kind: "mixed"),
            Template(text: "Despite weaker sales, {c} increased its operating profit to EUR {a} mn .", label: "positive", kind: "mixed"),
            Template(text: "{c} won new orders worth EUR {a} mn, but it still swung to a loss in the quarter .", label: "negative", kind: "mixed"),
            Template(text: "Although {c} cut {n} jobs, its profit for the period more than doubled .", label: "positive", kind: "mixed"),
        ]
        return t
    }()

    static let socialTemplates: [Template] = [
        Template(text: "${t} to the moon 🚀 another EUR {a}m order, {link}", label: "positive", kind: "slang"),
        Template(text: "${t} beat estimates again, not selling a single share 💪", label: "positive", kind: "slang"),
        Template(text: "bullish on ${t} after that guidance raise. +{p}% today", label: "positive", kind: "slang"),
        Template(text: "${t} +{p}% premarket, earnings crushed it {link}", label: "positive", kind: "numbers"),
        Template(text: "who's still holding ${t}? up {p}% this week lol", label: "positive", kind: "slang"),
        Template(text: "${t} dumping hard after the profit warning. ugh", label: "negative", kind: "slang"),
        Template(text: "${t} -{p}% premarket, missed on revenue {link}", label: "negative", kind: "numbers"),
        Template(text: "bagholders of ${t} getting rekt again, guidance cut", label: "negative", kind: "slang"),
        Template(text: "${t} layoffs: {n} jobs gone. bearish {link}", label: "negative", kind: "slang"),
        Template(text: "${t} up {p}% but sales still shrinking, I'm out", label: "negative", kind: "mixed"),
        Template(text: "${t} earnings call {day} 10:00 CET {link}", label: "neutral", kind: "clear"),
        Template(text: "anyone know when ${t} pays the dividend?", label: "neutral", kind: "slang"),
        Template(text: "${t} flat today. waiting for the AGM in {city}", label: "neutral", kind: "slang"),
        Template(text: "${t} new CFO starts {day}, no idea who she is {link}", label: "neutral", kind: "slang"),
        Template(text: "not panicking about ${t}, no bad news at all this quarter", label: "positive", kind: "negation"),
        Template(text: "great, another profit warning from ${t}. just great", label: "negative", kind: "sarcasm"),
        Template(text: "love how ${t} 'restructures' every year while the share price bleeds", label: "negative", kind: "sarcasm"),
        Template(text: "${t} can't stop winning lol, third order this month {link}", label: "positive", kind: "negation"),
        Template(text: "${t} Q3 EPS {a} vs {b} est.", label: nil, kind: "numbers"),
        Template(text: "${t} revenue EUR {a}m (cons. EUR {b}m)", label: nil, kind: "numbers"),
        Template(text: "might add more ${t} if they hold guidance, undecided", label: "neutral", kind: "hedge"),
        Template(text: "${t} chart looks interesting, anyone have a view? {link}", label: "neutral", kind: "slang"),
    ]

    /// How much more often than on a clear item the demo teacher errs on each kind.
    static let difficulty: [String: Double] = ["clear": 0.4, "numbers": 2.5, "negation": 2.5, "hedge": 2, "mixed": 3, "slang": 1, "sarcasm": 3]

    /// `count` sentences of the realistic demo stream, deterministic for `seed`: wire news first,
    /// social posts from `shiftAt` (a share of the stream; 1 = never), with the teacher's votes
    /// wrong on about `teacherErrorRate` of the items (0 = a perfect teacher).
    public static func realistic(count: Int, seed: UInt64 = 1, start: Date = Date(timeIntervalSince1970: 1_790_000_000),
                                 shiftAt: Double = 0.5, teacherErrorRate: Double = 0.07,
                                 negativeShiftCompany: String? = "cobalt") -> [Sentence] {
        var rng = SplitMix64(seed: seed)
        func pick<T>(_ items: [T]) -> T { items[Int(rng.next() % UInt64(items.count))] }
        func unit() -> Double { Double(rng.next() % 1_000_000) / 1_000_000 }
        let shiftIndex = Int((Double(count) * shiftAt).rounded())
        var out: [Sentence] = (0..<count).map { i in
            let company = pick(portfolio)
            let social = i >= shiftIndex
            var templates = social ? socialTemplates : wireTemplates
            // The alerts' story: one company's news turns negative in the last third.
            if company.id == negativeShiftCompany && i > count * 2 / 3 && rng.next() % 10 < 7 {
                templates = templates.filter { $0.label == "negative" }
            }
            let template = pick(templates)
            let a = Double(rng.next() % 900 + 20) / 10; var b = Double(rng.next() % 900 + 20) / 10
            if abs(a - b) < 1 { b = a + 3.5 }
            var text = template.text
            let values = ["{c}": rng.next() % 3 == 0 ? company.aliases[0] : company.name, "{t}": company.tickers[0],
                          "{a}": String(format: "%.1f", a), "{b}": String(format: "%.1f", b),
                          "{p}": "\(rng.next() % 25 + 2)", "{n}": "\((rng.next() % 40 + 1) * 10)",
                          "{city}": pick(cities), "{day}": pick(days), "{year}": "\(2026 + Int(rng.next() % 2))",
                          "{link}": "https://t.co/\(String(rng.next() % 1_000_000_000, radix: 36))"]
            for (k, v) in values { text = text.replacingOccurrences(of: k, with: v) }
            let label = template.label ?? (a > b ? "positive" : "negative")
            return Sentence(id: "demo-\(seed)-\(i)", text: text, label: label, companyID: company.id,
                            publishedAt: start.addingTimeInterval(Double(i) * 7), domain: social ? "social" : "wire", kind: template.kind)
        }
        // The teacher: errs with a probability proportional to the item's difficulty, scaled so
        // that the share of wrong majority labels is about `teacherErrorRate`.
        let meanDifficulty = out.reduce(0) { $0 + (difficulty[$1.kind] ?? 1) } / Double(max(1, out.count))
        for i in out.indices {
            let truth = out[i].label
            let wrongProbability = min(0.9, teacherErrorRate * (difficulty[out[i].kind] ?? 1) / meanDifficulty)
            if unit() < wrongProbability {
                // A real LLM's usual mistake: calling mild news neutral, or reading too much into neutral news.
                let wrong = truth == "neutral" ? (rng.next() % 2 == 0 ? "positive" : "negative") : (rng.next() % 4 == 0 ? (truth == "positive" ? "negative" : "positive") : "neutral")
                out[i].teacherVotes = unit() < 0.3 ? [wrong, truth, wrong] : [wrong, wrong, wrong]
            } else {
                out[i].teacherVotes = unit() < 0.06 ? [truth, truth == "neutral" ? "positive" : "neutral", truth] : [truth, truth, truth]
            }
        }
        return out
    }

    /// The demo teacher's answer book for `sentences`: `id`, `text`, the votes as `sc_iter1..3` (what
    /// the dev teacher replays), and the truth as `label` with `domain` and `kind` (what the demo
    /// scores against; the dev teacher ignores them).
    public static func answerTable(_ sentences: [Sentence]) -> CSVTable {
        CSVTable(header: ["id", "text", "sc_iter1", "sc_iter2", "sc_iter3", "label", "company", "domain", "kind"], rows: sentences.map { s in
            let votes = s.teacherVotes.isEmpty ? [s.label, s.label, s.label] : s.teacherVotes
            return [s.id, s.text] + votes + [s.label, s.companyID, s.domain, s.kind]
        })
    }
}
