import Foundation
import NewsdHTTP
import NewsdSystem
import NewsdTeacher
import Testing
@testable import NewsdDevTools

@Suite("dev-teacher replay")
struct DevTeacherTests {
    let table = CSVTable(header: ["text", "sc_iter1", "sc_iter2", "sc_iter3", "reason_iter1"],
                         rows: [["Profit rose .", "positive", "neutral", "positive", "up"]])

    func ask(_ t: DevTeacher, n: Int = 1) async -> (Int, [String]) {
        let messages = PromptTemplate.investorSentiment.render(text: "Profit  rose .", labels: ["negative", "neutral", "positive"])
        let body = try! JSONSerialization.data(withJSONObject: ["model": "m", "n": n, "messages": messages.map { ["role": $0.role, "content": $0.content] }])
        let reply = await t.handle(HTTPServiceRequest(method: "POST", path: "/v1/chat/completions", headers: [:], body: Array(body)))
        let parsed = TeacherClient.parseCompletion(reply.body)
        return (reply.status, parsed?.contents ?? [])
    }

    private func data(_ d: Data) -> [UInt8] { Array(d) }

    @Test("the i-th request gets sample i, cycling; n takes the next n; texts match after normalisation")
    func cycling() async throws {
        let t = DevTeacher(book: try AnswerBook(table: table))
        let parser = AnswerParser(labels: ["negative", "neutral", "positive"])
        var labels: [String?] = []
        for _ in 0..<4 { labels.append(parser.parse(await ask(t).1[0]).label) }
        #expect(labels == ["positive", "neutral", "positive", "positive"])
        let three = await ask(t, n: 3).1.map { parser.parse($0).label }
        #expect(three == ["neutral", "positive", "positive"])
        #expect(t.totals.samples == 7)
    }

    @Test("an injected fault does not use up a sample")
    func faultsKeepSamples() async throws {
        var f = FaultRates()
        f.rate500 = 1
        let failing = DevTeacher(book: try AnswerBook(table: table), faults: f)
        #expect(await ask(failing).0 == 500)
        #expect(failing.totals.samples == 0 && failing.totals.status500 == 1)
        f.rate500 = 0
        f.rateMalformed = 1
        let malformed = DevTeacher(book: try AnswerBook(table: table), faults: f)
        let (status, contents) = await ask(malformed)
        #expect(status == 200)
        #expect(AnswerParser(labels: ["positive"]).parse(contents[0]).label == nil)
    }

    @Test("a label column drives it too; unknown texts follow the rule")
    func labelColumnAndUnknown() async throws {
        let t = DevTeacher(book: try AnswerBook(table: CSVTable(header: ["text", "label"], rows: [["Other .", "negative"]])),
                           unknown: .error)
        #expect(await ask(t).0 == 404)
        #expect(throws: TeacherError.self) { try AnswerBook(table: CSVTable(header: ["text", "x"], rows: [])) }
        #expect(try UnknownTextRule(parsing: "label:neutral") == .label("neutral"))
    }
}

/// The realistic demo stream: hard kinds of sentences, a change of domain, a fallible teacher.
@Suite struct RealisticDemoDataTests {
    @Test func theStreamChangesKindAndTheTeacherErrsAsConfigured() {
        let s = DemoData.realistic(count: 4000, seed: 3, shiftAt: 0.5, teacherErrorRate: 0.07)
        #expect(s.prefix(2000).allSatisfy { $0.domain == "wire" } && s.suffix(2000).allSatisfy { $0.domain == "social" })
        func majority(_ v: [String]) -> String { v.max { a, b in v.filter { $0 == a }.count < v.filter { $0 == b }.count }! }
        let wrong = s.filter { majority($0.teacherVotes) != $0.label }
        let rate = Double(wrong.count) / Double(s.count)
        #expect(rate > 0.05 && rate < 0.09, "teacher error rate \(rate)")
        // Hard kinds are wrong more often than clear sentences.
        func errorRate(_ kind: String) -> Double {
            let k = s.filter { $0.kind == kind }
            return Double(k.filter { majority($0.teacherVotes) != $0.label }.count) / Double(max(1, k.count))
        }
        #expect(errorRate("mixed") > 2 * errorRate("clear"))
        #expect(Set(s.map(\.kind)).isSuperset(of: ["clear", "numbers", "negation", "hedge", "mixed", "slang"]))
        // Numbers decide: "EUR a mn ( EUR b mn )" is positive exactly when a > b.
        for x in s where x.text.contains("posted a result before taxes") {
            let n = x.text.split(separator: " ").compactMap { Double($0) }
            #expect(x.label == (n[0] > n[1] ? "positive" : "negative"), "\(x.text)")
        }
        #expect(DemoData.realistic(count: 50, seed: 3).map(\.text) == DemoData.realistic(count: 50, seed: 3).map(\.text))
        #expect(DemoData.realistic(count: 1000, seed: 3, teacherErrorRate: 0).allSatisfy { majority($0.teacherVotes) == $0.label })
    }
}
