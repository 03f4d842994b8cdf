import ArgumentParser
import Dispatch
import Foundation
import NewsdDaemon
import NewsdDevTools
import NewsdDistill
import NewsdIngest
import NewsdKafka
import NewsdModel
import NewsdOps
import NewsdPostgres
import NewsdSystem
import NewsdTeacher

/// `newsd bench`: benchmarks (figures, never pass/fail).
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "bench", abstract: "Benchmarks.", subcommands: [BenchModel.self])
}

/// `newsd bench model`: student throughput and latency on a CSV's sentences, for each precision
/// (fp32 and int8 on every kernel path this CPU runs, by default), with each one's agreement with
/// fp32's labels and the bytes of the weights it computes with.
struct BenchModel: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "model", abstract: "Student encoder throughput (tokenisation included) and latency.")

    @Option(help: "Artifact or base checkpoint directory.") var model: String
    @Option(help: "CSV with a text column.") var data: String
    @Option(help: "Column with the sentence.") var textColumn = "text"
    @Option(help: "Worker threads.") var threads = 2
    @Option(help: "Batch size of the batched pass.") var batch = 32
    @Option(help: "Batched passes over all sentences (the median is reported).") var `repeat` = 3
    @Option(help: "Sentences timed one at a time for batch-1 latency.") var batch1Count = 300
    @Option(help: "Comma-separated precisions: fp32, int8 (every vector int8 path this CPU runs), int8-<path>.") var precisions = "fp32,int8"
    @Flag(inversion: .prefixedNo, help: "Also measure each precision with early exit (models that carry exit classifiers).") var earlyExit = true
    @Flag(help: "Print one JSON object per precision.") var json = false

    func run() throws {
        var chosen: [EncoderPrecision] = []
        for name in precisions.split(separator: ",").map(String.init) {
            if name == "int8" {
                // Every vector path; the portable one (the reference, ~20x slower) only when it is all there is.
                let vector = Int8KernelPath.runnable.filter { $0 != .portable }
                chosen += (vector.isEmpty ? [.portable] : vector.reversed()).map { .int8($0) }
                continue
            }
            guard let p = EncoderPrecision(configuration: name) else { throw ValidationError("unknown precision \(name) (or a path this CPU cannot run; CPU features: \(CPUFeatures.host))") }
            chosen.append(p)
        }
        let fp32 = try Artifact.load(directory: URL(fileURLWithPath: model), threads: threads)
        let texts = try CSVTable(contentsOf: URL(fileURLWithPath: data)).values(textColumn)
        guard !texts.isEmpty else { throw ValidationError("no sentences in \(data)") }
        let ids = fp32.encode(texts)
        let reference = fp32.logits(ids: ids, batchSize: batch).map(argmax)   // every layer
        if !json { print("CPU features: \(CPUFeatures.host); int8 kernel paths here: \(Int8KernelPath.runnable.map(\.description).joined(separator: ", ")); OpenBLAS kernels (fp32): \(BLASCore.current)") }
        if let warning = BLASCore.weakerKernelsWarning { note("warning: \(warning)") }
        for precision in chosen {
            // Each precision with every layer, then (for a model with exit classifiers) with early exit.
            // Serving-only, as `newsd run` loads it: int8 holds no float weights.
            let full = fp32.with(precision: precision, earlyExit: false, servingOnly: true)
            try measure(full, precision: precision, texts: texts, reference: reference, fp32Bytes: fp32.runner.floatBytes)
            if earlyExit, fp32.earlyExit != nil {
                try measure(fp32.with(precision: precision, servingOnly: true), precision: precision, texts: texts, reference: reference,
                            fp32Bytes: fp32.runner.floatBytes)
            }
        }
    }

    private func measure(_ student: StudentModel, precision: EncoderPrecision, texts: [String], reference: [Int], fp32Bytes: Int) throws {
        _ = student.predict(Array(texts.prefix(64)), batchSize: batch)          // warm-up
        var rates: [Double] = []
        var tokens = 0
        var labels: [Int] = [], meanLayers = 0.0
        for _ in 0..<max(1, `repeat`) {
            let t0 = monotonicSeconds()
            let ids = student.encode(texts)
            let outputs = student.classify(ids: ids, batchSize: batch)
            rates.append(Double(texts.count) / (monotonicSeconds() - t0))
            tokens = ids.reduce(0) { $0 + $1.count }
            labels = outputs.map(\.prediction.labelIndex)
            meanLayers = Double(outputs.reduce(0) { $0 + $1.layers }) / Double(max(1, outputs.count))
        }
        let name = precision.description + (student.earlyExit == nil ? "" : "+exit")
        rates.sort()
        let batched = rates[rates.count / 2]
        var latencies: [Double] = []
        for text in texts.prefix(batch1Count) {
            let t0 = monotonicSeconds()
            _ = student.predict([text], batchSize: 1)
            latencies.append((monotonicSeconds() - t0) * 1000)
        }
        let total1 = latencies.reduce(0, +) / 1000
        latencies.sort()
        func pct(_ p: Double) -> Double { latencies[min(latencies.count - 1, Int(Double(latencies.count) * p))] }
        let agreement = Double(zip(labels, reference).filter { $0 == $1 }.count) / Double(max(1, reference.count))
        let result = ModelBenchmark(
            engine: "newsd", precision: name, cpuFeatures: CPUFeatures.host.description,
            modelVersion: student.version, threads: threads, batch: batch, n: texts.count,
            sentencesPerSecond: rounded(batched, 1), min: rounded(rates.first!, 1), max: rounded(rates.last!, 1),
            tokensPerSecond: rounded(batched * Double(tokens) / Double(texts.count), 0),
            meanTokens: rounded(Double(tokens) / Double(texts.count), 1),
            batch1SentencesPerSecond: rounded(Double(latencies.count) / total1, 1),
            p50Ms: rounded(pct(0.5), 2), p99Ms: rounded(pct(0.99), 2), peakRssMb: peakResidentBytes() / 1_048_576,
            floatWeightsMb: rounded(Double(student.runner.floatBytes) / 1_048_576, 1),
            int8WeightsMb: rounded(Double(student.runner.int8Bytes) / 1_048_576, 1),
            servingWeightsMb: rounded(Double(student.runner.residentBytes) / 1_048_576, 1),
            servingShareOfFp32: rounded(Double(student.runner.residentBytes) / Double(max(1, fp32Bytes)), 3), agreementWithFp32: rounded(agreement, 4),
            meanLayers: rounded(meanLayers, 2))
        if json { print(jsonLine(result)); return }
        print(String(format: "newsd %@ threads=%d batch=%d: median %.1f sentences/s (min %.1f, max %.1f) over %d sentences, %.0f tokens/s; serving weights %.1f MB (%.1f%% of fp32's; int8 matrices %.1f MB); same label as fp32 %.2f%%; %.2f layers per sentence",
                     name, threads, batch, batched, rates.first!, rates.last!, texts.count, batched * Double(tokens) / Double(texts.count),
                     result.servingWeightsMb, result.servingShareOfFp32 * 100, result.int8WeightsMb, agreement * 100, meanLayers))
        print(String(format: "  batch 1: %.1f sentences/s, p50 %.2f ms, p99 %.2f ms over %d sentences; peak RSS %d MB",
                     Double(latencies.count) / total1, pct(0.5), pct(0.99), latencies.count, peakResidentBytes() / 1_048_576))
    }
}

/// Index of the largest value.
private func argmax(_ v: [Float]) -> Int { v.indices.max { v[$0] < v[$1] } ?? 0 }

/// `newsd bench model --json`.
struct ModelBenchmark: Encodable {
    var engine: String, precision: String, cpuFeatures: String, modelVersion: String, threads: Int, batch: Int, n: Int
    var sentencesPerSecond: Double, min: Double, max: Double, tokensPerSecond: Double, meanTokens: Double
    var batch1SentencesPerSecond: Double, p50Ms: Double, p99Ms: Double, peakRssMb: Int
    var floatWeightsMb: Double, int8WeightsMb: Double, servingWeightsMb: Double, servingShareOfFp32: Double, agreementWithFp32: Double, meanLayers: Double
    enum CodingKeys: String, CodingKey {
        case engine, precision, cpuFeatures = "cpu_features", modelVersion = "model_version", threads, batch, n
        case sentencesPerSecond = "sentences_per_second", min, max, floatWeightsMb = "float_weights_mb", int8WeightsMb = "int8_weights_mb"
        case agreementWithFp32 = "agreement_with_fp32", meanLayers = "mean_layers"
        case servingWeightsMb = "serving_weights_mb", servingShareOfFp32 = "serving_share_of_fp32"
        case tokensPerSecond = "tokens_per_second", meanTokens = "mean_tokens", batch1SentencesPerSecond = "batch1_sentences_per_second"
        case p50Ms = "p50_ms", p99Ms = "p99_ms", peakRssMb = "peak_rss_mb"
    }
}
