import Foundation
import Testing
@testable import NewsdSystem

@Suite struct CSVTests {
    @Test func quotedFieldsWithCommasQuotesAndNewlines() throws {
        let t = try CSVTable(parsing: "text,label\n\"a, \"\"b\"\"\nc\",positive\r\nplain,neutral\n")
        #expect(t.header == ["text", "label"])
        #expect(t.rows == [["a, \"b\"\nc", "positive"], ["plain", "neutral"]])
        #expect(try CSVTable(parsing: t.csvText()).rows == t.rows)
    }

    @Test func wrongFieldCountNamesTheRecord() {
        #expect(throws: SystemError.self) { try CSVTable(parsing: "a,b\n1,2\n3\n", source: "x.csv") }
    }
}
