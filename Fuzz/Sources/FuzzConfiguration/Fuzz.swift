import NewsdOps

/// Any text as the configuration file: a configuration or a `ConfigurationError`, never a crash.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzConfiguration(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    do { _ = try NewsdConfiguration.load(toml: text, source: "fuzz", environment: [:], requireModel: false) } catch is ConfigurationError {
    } catch {
        preconditionFailure("not a ConfigurationError: \(error)")
    }
    return 0
}

// SwiftPM links an executable's `main` to `FuzzConfiguration_main`; it hands libFuzzer the input function.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>, Int) -> CInt) -> CInt

@_cdecl("FuzzConfiguration_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var count = argc, arguments = argv
    return LLVMFuzzerRunDriver(&count, &arguments, fuzzConfiguration)
}
