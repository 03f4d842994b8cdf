import Foundation
import Testing
@testable import NewsdIngest

/// Message parsing and company linking (pure, no I/O).
@Suite struct MessageParserAndLinkerTests {
    let parser = MessageParser(maxTextBytes: 100)

    @Test func jsonAndPlainTextMessages() throws {
        let item = try parser.parse(Array(#"{"id": 7, "text": " Profit rose ", "published_at": "2026-01-02T03:04:05Z", "source": "wire", "companies": ["a"]}"#.utf8)).get()
        #expect(item.externalID == "7" && item.text == "Profit rose" && item.source == "wire" && item.companies == ["a"])
        #expect(item.publishedAt == Date(timeIntervalSince1970: 1_767_323_045))
        #expect(try parser.parse(Array("  plain text line\n".utf8)).get().text == "plain text line")
    }

    @Test(arguments: [
        (#"{"text": "x""#, "malformed JSON"), (#"{"id": "1"}"#, "no \"text\""), (#"{"text": 1}"#, "not a string"),
        ("  \n ", "empty text"), (#"{"id": "a\u0000b", "text": "x"}"#, "id contains a NUL"), (#"{"text": "a", "companies": "x"}"#, "companies"), (String(repeating: "y", count: 101), "exceeds"),
    ])
    func badMessagesAreRejectedWithAReason(message: String, reason: String) {
        guard case let .failure(r) = parser.parse(Array(message.utf8)) else { Issue.record("accepted \(message)"); return }
        #expect(r.description.contains(reason), "\(r)")
    }

    @Test func invalidUTF8IsRejected() {
        guard case let .failure(r) = parser.parse([0x61, 0xFF]) else { Issue.record("accepted"); return }
        #expect(r.description == "invalid UTF-8")
    }

    @Test func linkerMatchesNamesCaseInsensitivelyAndTickersExactlyAtWordBoundaries() {
        let linker = CompanyLinker([Company(id: "on", name: "Onsemi Corp", aliases: ["Onsemi"], tickers: ["ON"]),
                                    Company(id: "nokia", name: "Nokia", aliases: ["Nokia Oyj"], tickers: ["NOK1V"])])
        #expect(linker.link("NOKIA OYJ said sales rose").map(\.companyID) == ["nokia"])
        #expect(linker.link("Shares went on sale").isEmpty)                   // "on" is not the ticker ON
        #expect(linker.link("ON rose 5 %; Nokian Tyres fell").map(\.companyID) == ["on"])   // no match inside "Nokian"
        #expect(linker.link("onsemi and NOK1V", given: ["x"]).map(\.companyID) == ["x", "on", "nokia"])
    }
}

/// Hostile messages the parser must refuse with a reason (each was once stored, or stopped the
/// stream further down).
@Suite struct HostileMessageTests {
    let parser = MessageParser(limits: MessageParser.Limits())

    func reason(_ json: String) -> String? {
        if case let .failure(r) = parser.parse(Array(json.utf8)) { return r.description }
        return nil
    }

    /// An incompressible id of 10,000 characters: stored, it overflowed the external_id index
    /// (SQLSTATE 54000) and made the whole batch fail.
    @Test func oversizeFieldsAreRefusedByName() {
        var rng = SystemRandomNumberGenerator()
        let random = String((0..<10_000).map { _ in Character(Unicode.Scalar(UInt8.random(in: 0x21...0x7E, using: &rng))) }).replacingOccurrences(of: "\"", with: "'").replacingOccurrences(of: "\\", with: "/")
        #expect(reason(#"{"id": "\#(random)", "text": "Profit rose"}"#)?.hasPrefix("id of 10000 bytes exceeds the limit of 256") == true)
        #expect(reason(#"{"source": "\#(random)", "text": "Profit rose"}"#)?.hasPrefix("source of 10000 bytes") == true)
        #expect(reason(#"{"companies": ["\#(random)"], "text": "Profit rose"}"#)?.hasPrefix("a company id of 10000 bytes") == true)
        let many = (0..<20_000).map { "\"c\($0)\"" }.joined(separator: ",")
        #expect(reason(#"{"companies": [\#(many)], "text": "Profit rose"}"#)?.hasPrefix("companies lists 20000 ids, more than the limit of 64") == true)
        #expect(reason(#"{"companies": ["  "], "text": "Profit rose"}"#) == "companies contains an empty id")
    }

    @Test(arguments: ["\u{200B}\u{200C}\u{200D}", "\u{202E}\u{2066}\u{2069}", "\u{FEFF}\u{00AD}", "\u{2028}\u{200B}\u{00A0}\u{3000}"])
    func invisibleOnlyTextIsRefused(text: String) {
        let r = reason(#"{"text": "\#(text)"}"#) ?? "accepted"
        #expect(r.hasPrefix("text has no visible character") || r == "empty text", "\(r)")
        #expect(reason(#"{"text": "\#(text)Profit rose"}"#) == nil)
    }

    @Test func impossibleDatesAreRefusedNotShifted() {
        #expect(reason(#"{"text": "Profit rose", "published_at": "0000-01-01T00:00:00Z"}"#)?.contains("is not an ISO 8601 time") == true)
        #expect(reason(#"{"text": "Profit rose", "published_at": "1899-12-31"}"#) != nil)
        #expect(reason(#"{"text": "Profit rose", "published_at": "3000-01-01T00:00:00Z"}"#) != nil)
        #expect(reason(#"{"text": "Profit rose", "published_at": "2026-12-01T02:40:00Z"}"#) == nil)
    }
}
