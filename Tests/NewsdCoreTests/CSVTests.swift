import Testing
@testable import NewsdCore

@Suite struct CSVTests {
    @Test func quotedFieldsWithCommasQuotesAndNewlines() throws {
        let t = try CSVTable(parsing: "text,label\n\"a, \"\"b\"\"\nc\",positive\r\nplain,neutral\n")
        #expect(t.header == ["text", "label"])
        #expect(t.rows == [["a, \"b\"\nc", "positive"], ["plain", "neutral"]])
        #expect(try CSVTable(parsing: t.csvText()).rows == t.rows)
    }

    @Test func wrongFieldCountNamesTheRecord() {
        #expect(throws: CoreError.self) { try CSVTable(parsing: "a,b\n1,2\n3\n", source: "x.csv") }
    }

    @Test func votesBecomeSoftLabels() throws {
        let t = try CSVTable(parsing: "text,label,s1,s2,s3\nup,positive,positive,positive,neutral\nflat,neutral,none,neutral,neutral\n")
        let d = try LabelledData(table: t, textColumn: "text", labelColumn: "label", softLabelColumns: ["s1", "s2", "s3"])
        #expect(d.labels == ["neutral", "positive"])
        #expect(d.targets[0] == [1.0 / 3, 2.0 / 3])
        #expect(d.targets[1] == [1, 0])
    }

    @Test func validationSplitIsStableAndSized() {
        let texts = (0..<10_000).map { "sentence number \($0)" }
        let held = texts.filter { TextHash.isValidation($0, fraction: 0.1) }.count
        #expect(held > 900 && held < 1100)
        #expect(TextHash.fnv1a("Profit  ROSE ") == TextHash.fnv1a("profit rose"))
    }
}
