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

/// `newsd bench model`: student throughput and latency on a CSV's sentences.
struct BenchModel: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "model", abstract: "Student encoder throughput (tokenisation included) and latency.")

    @Option(help: "Artifact or base checkpoint directory.") var model: String
    @Option(help: "CSV with a text column.") var data: String
    @Option(help: "Column with the sentence.") var textColumn = "text"
    @Option(help: "Worker threads.") var threads = 2
    @Option(help: "Batch size of the batched pass.") var batch = 32
    @Option(help: "Batched passes over all sentences (the median is reported).") var `repeat` = 3
    @Option(help: "Sentences timed one at a time for batch-1 latency.") var batch1Count = 300
    @Flag(help: "Print one JSON object.") var json = false

    func run() throws {
        let student = try Artifact.load(directory: URL(fileURLWithPath: model), threads: threads)
        let texts = try CSVTable(contentsOf: URL(fileURLWithPath: data)).values(textColumn)
        guard !texts.isEmpty else { throw ValidationError("no sentences in \(data)") }
        _ = student.predict(Array(texts.prefix(64)), batchSize: batch)          // warm-up
        var rates: [Double] = []
        var tokens = 0
        for _ in 0..<max(1, `repeat`) {
            let t0 = monotonicSeconds()
            let ids = student.encode(texts)
            _ = student.logits(ids: ids, batchSize: batch)
            rates.append(Double(texts.count) / (monotonicSeconds() - t0))
            tokens = ids.reduce(0) { $0 + $1.count }
        }
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
        let result = ModelBenchmark(
            engine: "newsd", modelVersion: student.version, threads: threads, batch: batch, n: texts.count,
            sentencesPerSecond: rounded(batched, 1), min: rounded(rates.first!, 1), max: rounded(rates.last!, 1),
            tokensPerSecond: rounded(batched * Double(tokens) / Double(texts.count), 0),
            meanTokens: rounded(Double(tokens) / Double(texts.count), 1),
            batch1SentencesPerSecond: rounded(Double(latencies.count) / total1, 1),
            p50Ms: rounded(pct(0.5), 2), p99Ms: rounded(pct(0.99), 2), peakRssMb: peakResidentBytes() / 1_048_576)
        if json { print(jsonLine(result)); return }
        print(String(format: "newsd threads=%d batch=%d: median %.1f sentences/s (min %.1f, max %.1f) over %d sentences, %.0f tokens/s",
                     threads, batch, batched, rates.first!, rates.last!, texts.count, batched * Double(tokens) / Double(texts.count)))
        print(String(format: "batch 1: %.1f sentences/s, p50 %.2f ms, p99 %.2f ms over %d sentences; peak RSS %d MB",
                     Double(latencies.count) / total1, pct(0.5), pct(0.99), latencies.count, peakResidentBytes() / 1_048_576))
    }
}

/// `newsd bench model --json`.
struct ModelBenchmark: Encodable {
    var engine: String, modelVersion: String, threads: Int, batch: Int, n: Int
    var sentencesPerSecond: Double, min: Double, max: Double, tokensPerSecond: Double, meanTokens: Double
    var batch1SentencesPerSecond: Double, p50Ms: Double, p99Ms: Double, peakRssMb: Int
    enum CodingKeys: String, CodingKey {
        case engine, modelVersion = "model_version", threads, batch, n, sentencesPerSecond = "sentences_per_second", min, max
        case tokensPerSecond = "tokens_per_second", meanTokens = "mean_tokens", batch1SentencesPerSecond = "batch1_sentences_per_second"
        case p50Ms = "p50_ms", p99Ms = "p99_ms", peakRssMb = "peak_rss_mb"
    }
}
