import FuzzSupport
import NewsdIngest

/// A fixed portfolio against any text (and the first bytes as given company ids): every mention
/// is a known or given company, each at most once.
let linker = CompanyLinker([
    Company(id: "on", name: "Onsemi Corp", aliases: ["Onsemi", "ON Semiconductor"], tickers: ["ON"]),
    Company(id: "nokia", name: "Nokia", aliases: ["Nokia Oyj", "Nokia Corporation"], tickers: ["NOK1V", "NOK"]),
    Company(id: "aa", name: "A", aliases: ["AA", "A A"], tickers: ["A"]),
    Company(id: "unicode", name: "Société Générale", aliases: ["SocGen", "ソシエテ"], tickers: ["GLE"]),
])

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzCompanyLinker(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    let given = size > 0 && data[0] & 1 == 1 ? [String(text.prefix(8))] : []
    let mentions = linker.link(text, given: given)
    precondition(Set(mentions.map(\.companyID)).count == mentions.count)
    precondition(mentions.allSatisfy { linker.isKnown($0.companyID) || given.contains($0.companyID) })
    return 0
}

@_cdecl("FuzzCompanyLinker_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt { runLibFuzzer(argc, argv, fuzzCompanyLinker) }
