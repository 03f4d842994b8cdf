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

    func ask(_ t: DevTeacher, n: Int = 1) -> (Int, [String]) {
        let messages = PromptTemplate.investorSentiment.render(text: "Profit  rose .", labels: ["negative", "neutral", "positive"])
        let body = try! JSONSerialization.data(withJSONObject: ["model": "m", "n": n, "messages": messages.map { ["role": $0.role, "content": $0.content] }])
        guard case let .respond(status, _, reply) = t.handle(ServerRequest(method: "POST", path: "/v1/chat/completions", headers: [:], body: Array(body))) else { return (0, []) }
        let parsed = TeacherClient.parseCompletion(reply)
        return (status, parsed?.contents ?? [])
    }

    private func data(_ d: Data) -> [UInt8] { Array(d) }

    @Test("the i-th request gets sample i, cycling; n takes the next n; texts match after normalisation")
    func cycling() throws {
        let t = DevTeacher(book: try AnswerBook(table: table))
        let parser = AnswerParser(labels: ["negative", "neutral", "positive"])
        let labels = (0..<4).map { _ in parser.parse(ask(t).1[0]).label }
        #expect(labels == ["positive", "neutral", "positive", "positive"])
        let three = ask(t, n: 3).1.map { parser.parse($0).label }
        #expect(three == ["neutral", "positive", "positive"])
        #expect(t.totals.samples == 7)
    }

    @Test("an injected fault does not use up a sample")
    func faultsKeepSamples() throws {
        var f = FaultRates()
        f.rate500 = 1
        let failing = DevTeacher(book: try AnswerBook(table: table), faults: f)
        #expect(ask(failing).0 == 500)
        #expect(failing.totals.samples == 0 && failing.totals.status500 == 1)
        f.rate500 = 0
        f.rateMalformed = 1
        let malformed = DevTeacher(book: try AnswerBook(table: table), faults: f)
        let (status, contents) = ask(malformed)
        #expect(status == 200)
        #expect(AnswerParser(labels: ["positive"]).parse(contents[0]).label == nil)
    }

    @Test("a label column drives it too; unknown texts follow the rule")
    func labelColumnAndUnknown() throws {
        let t = DevTeacher(book: try AnswerBook(table: CSVTable(header: ["text", "label"], rows: [["Other .", "negative"]])),
                           unknown: .error)
        #expect(ask(t).0 == 404)
        #expect(throws: TeacherError.self) { try AnswerBook(table: CSVTable(header: ["text", "x"], rows: [])) }
        #expect(try UnknownTextRule(parsing: "label:neutral") == .label("neutral"))
    }
}
