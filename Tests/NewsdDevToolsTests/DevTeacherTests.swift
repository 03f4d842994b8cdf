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
