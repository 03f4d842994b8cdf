import Foundation
import Testing

/// `newsd check-config` checks what `run` would otherwise fail on later: the Postgres URL's
/// syntax, the model files, the portfolio file, the listen address. (Before: it checked only
/// that values had the right type.)
@Suite("newsd check-config")
struct CheckConfigTests {
    func check(_ toml: String) throws -> (status: Int32?, output: String) {
        let file = Harness.temporaryDirectory().appendingPathComponent("c.toml")
        try toml.write(to: file, atomically: true, encoding: .utf8)
        let p = try DaemonProcess(arguments: ["check-config", "--config", file.path], name: "check-config", outputToLog: true)
        return (p.wait(timeout: 30), p.logText)
    }

    @Test("each check names its key; a password in a bad URL is not shown")
    func checksNameTheirKey() throws {
        let model = Harness.tinyModel.path
        let ok = try check("[model]\ndir = \"\(model)\"\n[portfolio]\nfile = \"\(Harness.portfolioFile.path)\"\n")
        #expect(ok.status == 0 && ok.output.contains("configuration OK"), "\(ok.output)")
        let url = try check("[model]\ndir = \"\(model)\"\n[postgres]\nurl = \"postgresql://u:sekrit99%zz@host/db\"\n")
        #expect(url.status != 0 && url.output.contains("postgres.url") && !url.output.contains("sekrit99"), "\(url.output)")
        let empty = Harness.temporaryDirectory().path
        let noModel = try check("[model]\ndir = \"\(empty)\"\n")
        #expect(noModel.status != 0 && noModel.output.contains("model.dir") && noModel.output.contains("config.json"), "\(noModel.output)")
        let badCSV = Harness.temporaryDirectory().appendingPathComponent("portfolio.csv")
        try "id,name,aliases,tickers\nx,,,\n".write(to: badCSV, atomically: true, encoding: .utf8)
        let portfolio = try check("[model]\ndir = \"\(model)\"\n[portfolio]\nfile = \"\(badCSV.path)\"\n")
        #expect(portfolio.status != 0 && portfolio.output.contains("portfolio.file"), "\(portfolio.output)")
        let listen = try check("[model]\ndir = \"\(model)\"\n[metrics]\nlisten = \"9464\"\n")
        #expect(listen.status != 0 && listen.output.contains("metrics.listen"), "\(listen.output)")
    }
}
