import Foundation
import NewsdSystem

/// A tensor read from a safetensors file, converted to `Float`.
public struct NamedTensor: Sendable {
    /// Shape, outermost dimension first.
    public var shape: [Int]
    /// Row-major values.
    public var values: [Float]
}

/// Reader and writer of the safetensors format: an 8-byte little-endian header length, a JSON
/// header mapping names to dtype, shape and byte offsets, then the raw little-endian data.
public enum SafeTensors {
    /// Reads every floating-point tensor of a file (F32, F16 and BF16 are converted to `Float`;
    /// integer tensors such as `position_ids` are skipped). Throws with the path and the reason.
    public static func read(_ url: URL) throws -> [String: NamedTensor] {
        let data: Data
        do { data = try Data(contentsOf: url, options: .alwaysMapped) } catch {
            throw ModelError.missingFile(url.path, underlying: "\(error)")
        }
        return try decode(data, path: url.path)
    }

    /// Decodes a safetensors byte buffer; `path` names it in errors.
    public static func decode(_ data: Data, path: String) throws -> [String: NamedTensor] {
        guard data.count >= 8 else { throw ModelError.invalidFile(path, reason: "shorter than the 8-byte header length") }
        let headerLength = data.withUnsafeBytes { raw in
            UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
        }
        guard headerLength <= UInt64(data.count - 8), headerLength < 100_000_000 else {
            throw ModelError.invalidFile(path, reason: "header length \(headerLength) exceeds the file size \(data.count)")
        }
        let dataStart = 8 + Int(headerLength)
        let header: [String: JSONValue]
        do {
            header = try JSONDecoder().decode(JSONValue.self, from: data.subdata(in: 8..<dataStart)).object ?? [:]
        } catch {
            throw ModelError.invalidFile(path, reason: "header is not JSON: \(error)")
        }
        var tensors: [String: NamedTensor] = [:]
        for (name, entry) in header where name != "__metadata__" {
            guard let entry = entry.object, let dtype = entry["dtype"]?.string,
                  let shape = entry["shape"]?.array?.compactMap(\.int),
                  let offsets = entry["data_offsets"]?.array?.compactMap(\.int),
                  offsets.count == 2 else {
                throw ModelError.invalidFile(path, reason: "malformed header entry for \(name)")
            }
            let count = shape.reduce(1, *)
            let width: Int
            switch dtype {
            case "F32": width = 4
            case "F16", "BF16": width = 2
            case "I64", "I32", "I16", "I8", "U8", "BOOL", "F64": continue
            default: throw ModelError.invalidFile(path, reason: "tensor \(name) has unsupported dtype \(dtype)")
            }
            let begin = dataStart + offsets[0], end = dataStart + offsets[1]
            guard offsets[0] >= 0, end >= begin, end <= data.count, end - begin == count * width else {
                throw ModelError.invalidFile(path, reason: "tensor \(name) (\(dtype) \(shape)) has byte range \(offsets) that does not fit the file or the shape")
            }
            var values = [Float](repeating: 0, count: count)
            data.withUnsafeBytes { raw in
                let base = raw.baseAddress! + begin
                switch dtype {
                case "F32":
                    values.withUnsafeMutableBytes { $0.copyMemory(from: UnsafeRawBufferPointer(start: base, count: count * 4)) }
                case "F16":
                    for i in 0..<count {
                        values[i] = Float(Float16(bitPattern: UInt16(littleEndian: base.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))))
                    }
                default: // BF16: the upper half of an F32
                    for i in 0..<count {
                        let bits = UInt32(UInt16(littleEndian: base.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) << 16
                        values[i] = Float(bitPattern: bits)
                    }
                }
            }
            tensors[name] = NamedTensor(shape: shape, values: values)
        }
        return tensors
    }

    /// Encodes F32 tensors (sorted by name, so the bytes are deterministic) with string metadata.
    public static func encode(_ tensors: [String: NamedTensor], metadata: [String: String] = [:]) throws -> Data {
        var entries: [String: JSONValue] = [:]
        var offset = 0
        let names = tensors.keys.sorted()
        for name in names {
            let t = tensors[name]!
            let bytes = t.values.count * 4
            entries[name] = .object(["dtype": .string("F32"), "shape": .array(t.shape.map { .integer($0) }),
                                     "data_offsets": .array([.integer(offset), .integer(offset + bytes)])])
            offset += bytes
        }
        if !metadata.isEmpty { entries["__metadata__"] = .object(metadata.mapValues { .string($0) }) }
        var header = try JSONText.data(entries)
        while (8 + header.count) % 8 != 0 { header.append(0x20) }   // align data to 8 bytes
        var out = Data(capacity: 8 + header.count + offset)
        withUnsafeBytes(of: UInt64(header.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(header)
        for name in names { tensors[name]!.values.withUnsafeBytes { out.append(contentsOf: $0) } }
        return out
    }
}
