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
