import Foundation
import NewsdHTTP
import NewsdPostgres
import NewsdSystem

/// newsd's configuration: one TOML file, every key overridable by `NEWSD_<SECTION>_<KEY>`
/// environment variables (so systemd `EnvironmentFile=` and scripts can set it). Secrets never
/// need to be in the file: see `Secrets`. `config/newsd.example.toml` documents every key.
public struct NewsdConfiguration: Sendable, Equatable, Codable {
    /// `[kafka]`: where news comes from.
    public struct Kafka: Sendable, Equatable, Codable {
        /// The defaults.
        public init() {}
        /// Bootstrap servers, `host:port,...`. Default `localhost:9092`.
        public var brokers = "localhost:9092"
        /// Topics to consume. Default `["news"]`.
        public var topics = ["news"]
        /// Consumer group; hosts with the same group share the partitions. Default `newsd`.
        public var groupID = "newsd"
        /// Where a partition with no stored offset starts: `earliest` or `latest`. Default `earliest`.
        public var autoOffsetReset = OffsetReset.earliest
        /// Group session timeout; lower means faster failover, more false alarms. Default 45000.
        public var sessionTimeoutMs = 45_000
        /// Extra librdkafka properties (`[kafka.properties]`), e.g. `"security.protocol" = "SASL_SSL"`.
        public var properties: [String: String] = [:]
    }

    /// `[postgres]`: where results go.
    public struct Postgres: Sendable, Equatable, Codable {
        /// The defaults.
        public init() {}
        /// libpq connection string or URI. Default `postgresql:///newsd` (local socket).
        /// The password comes from `NEWSD_POSTGRES_PASSWORD`, `PGPASSWORD` or `~/.pgpass`.
        public var url = "postgresql:///newsd"
        /// Seconds between reconnection attempts at most (backoff doubles up to it). Default 30.
        public var maxBackoffSeconds: Seconds = 30.0
    }

    /// `[model]`: the student.
    public struct Model: Sendable, Equatable, Codable {
        /// The defaults.
        public init() {}
        /// Student artifact directory (or a base checkpoint directory, untrained head). Required.
        public var dir = ""
        /// Base checkpoint that artifacts build on. Default: the path recorded in the artifact.
        public var baseDir = ""
        /// Inference threads. Default 2.
        public var threads = 2
        /// Sentences per inference chunk group. Default 32.
        public var batchSize = 32
        /// Encoder precision: `int8` (int8 linear layers on the fastest kernel path this CPU's
        /// feature flags allow, chosen at start-up and logged), `int8-portable`, `int8-avx2`,
        /// `int8-avx512-vnni`, or `fp32` (the training forward pass, through OpenBLAS).
        /// Default `int8`.
        public var precision = "int8"
        /// Predictions of the serving model kept for exact repeats of a text (wire copies,
        /// re-posts), answered without an encoder pass; emptied when a model is swapped in.
        /// 0 turns it off. Bounded by bytes too (512 bytes of text per entry), so long texts
        /// cannot grow it: at most about 25 MB of text at the default. Default 50000.
        public var cacheEntries = 50_000
        /// Stop a sentence at an intermediate layer when that layer's classifier is sure enough
        /// (models trained by this version carry such classifiers and a threshold chosen on their
        /// validation split so that macro-F1 stays within 0.5 points). `false` runs every layer.
        /// Default true.
        public var earlyExit = true
        /// Share of the encoder's time the cold-start backfill (classifying, with the first
        /// trained model, the items that arrived before it) may take: it shares the serving
        /// model with ingest, so it pauses after each chunk for long enough that ingest keeps
        /// the rest. 1 runs it flat out. Default 0.25.
        public var backfillShare = 0.25
        /// Where registered models are unpacked. Default `$STATE_DIRECTORY/models`, else the
        /// temporary directory.
        public var cacheDir = ""
    }

    /// `[portfolio]`: the companies to link.
    public struct Portfolio: Sendable, Equatable, Codable {
        /// The defaults.
        public init() {}
        /// CSV with columns id,name,aliases,tickers (aliases and tickers separated by `;`). Default none.
        public var file = ""
    }

    /// `[ingest]`: micro-batching and limits.
    public struct Ingest: Sendable, Equatable, Codable {
        /// The defaults.
        public init() {}
        /// Messages per micro-batch at most. Default 96: with the int8 student on 2 cores, about
        /// 580 messages/s with a p99 batch latency near 220 ms (256: about 650/s, p99 450 ms).
        public var batchMaxMessages = 96
        /// Milliseconds a micro-batch waits to fill at most. Default 250.
        public var batchMaxWaitMs = 250
        /// Write a batch on a second thread while the next one is read and classified (at most
        /// one batch in each stage; offsets still stored in the batch's own transaction). `false`
        /// writes each batch before reading the next: the same results, more slowly (for
        /// diagnosis and side-by-side benchmarks). Default true.
        public var writeBehind = true
        /// Texts longer than this many UTF-8 bytes are rejected. Default 8192.
        public var maxTextBytes = 8192
        /// Longer `id` values (UTF-8 bytes) are rejected. Default 256.
        public var maxIdBytes = 256
        /// Longer `source` values (UTF-8 bytes) are rejected. Default 256.
        public var maxSourceBytes = 256
        /// Longer company ids in `companies` (UTF-8 bytes) are rejected. Default 128.
        public var maxCompanyIdBytes = 128
        /// A message naming more companies in `companies` is rejected. Default 64.
        public var maxCompanies = 64
        /// Companies linked to one item at most (named ones first, then by position in the text);
        /// the rest are dropped and counted. Default 64.
        public var maxMentions = 64
        /// Company ids in `companies` that are not in the portfolio: `drop` them (counted in
        /// `newsd_unknown_companies_total`) or `reject` the message. Applies only when a portfolio
        /// is configured. Default drop.
        public var unknownCompanies = UnknownCompanyPolicy.drop
        /// Seconds to finish the batch in flight after SIGTERM (keep below systemd's
        /// TimeoutStopSec). Default 20.
        public var shutdownTimeoutSeconds: Seconds = 20.0
    }

    /// `[metrics]`: the operators' HTTP endpoint.
    public struct Metrics: Sendable, Equatable, Codable {
        /// The defaults.
        public init() {}
        /// `host:port` serving `GET /metrics` (Prometheus), `GET /healthz` and `GET /readyz`; empty
        /// disables it. Default `127.0.0.1:9464`. A port already in use is logged and the daemon
        /// runs without it.
        public var listen = "127.0.0.1:9464"
        /// Connections served at once; more wait in the kernel's backlog. Default 16384 (a few KB
        /// each: bounded memory, and a scrape still gets through a flood of idle connections).
        public var maxConnections = 16_384
        /// A connection with no request for this long is closed. Default 10 s.
        public var idleTimeoutSeconds: Seconds = 10.0
    }

    /// `[teacher]`: the LLM that labels the items the student is unsure about.
    public struct Teacher: Sendable, Equatable, Codable {
        /// The defaults.
        public init() {}
        /// Base URL of an OpenAI-compatible API (`{base_url}/chat/completions`); empty disables the
        /// teacher (nothing is queued, no worker runs). Default empty.
        public var baseURL = ""
        /// Model name sent to the server. Default `teacher`.
        public var model = "teacher"
        /// Prompt template file (`=== system ===` / `=== user ===`, `{{labels}}`, `{{text}}`);
        /// empty = the built-in investor-sentiment prompt. Default empty.
        public var promptFile = ""
        /// Labels the teacher may answer. Default negative, neutral, positive.
        public var labels = ["negative", "neutral", "positive"]
        /// Samples per item (k, self-consistency). Default 3.
        public var samples = 3
        /// Extra samples at most when the first k have no majority (m). Default 2.
        public var extraSamples = 2
        /// Sampling temperature. Default 0.8.
        public var temperature = 0.8
        /// Nucleus sampling. Default 0.9.
        public var topP = 0.9
        /// Completion tokens per sample at most. Default 256.
        public var maxTokens = 256
        /// Ask for k samples in one request (`n`); servers that ignore it get one request per sample.
        /// Default true.
        public var useN = true
        /// Requests in flight at most, per host. Default 16.
        public var concurrency = 16
        /// Requests per minute at most, per host (0 = unlimited). Default 600.
        public var requestsPerMinute = 600
        /// Tokens per minute at most, per host (0 = unlimited). Default 0.
        public var tokensPerMinute = 0
        /// US dollars per UTC day for all hosts together (0 = unlimited). Default 5.
        public var dailyBudgetUSD = 5.0
        /// Price per million prompt tokens, USD (set your provider's). Default 0.5.
        public var inputPricePerMillion = 0.5
        /// Price per million completion tokens, USD. Default 1.5.
        public var outputPricePerMillion = 1.5
        /// Seconds per request at most. Default 60.
        public var timeoutSeconds: Seconds = 60.0
        /// Seconds to connect at most. Default 10.
        public var connectTimeoutSeconds: Seconds = 10.0
        /// Retries per request (429, 5xx, timeouts, connection errors). Default 6.
        public var maxRetries = 6
        /// Seconds a worker holds a claimed item before another host may take it. Default 300.
        public var leaseSeconds: Seconds = 300.0
        /// Claims of one item at most before it is marked failed. Default 10.
        public var maxAttempts = 10
        /// Run the queue worker in `newsd run` (false: only `newsd teacher work` drains it). Default true.
        public var worker = true
        /// Selection strategy: margin, entropy, top_k or random. Default margin.
        public var selection = SelectionStrategy.margin
        /// Margin (top-1 minus top-2 probability) below which an item is uncertain. Default 0.3.
        public var marginThreshold = 0.3
        /// Entropy (nats) above which an item is uncertain. Default 0.7.
        public var entropyThreshold = 0.7
        /// Items per window for top_k. Default 200.
        public var topK = 200
        /// The top_k window, seconds. Default 3600.
        public var windowSeconds: Seconds = 3600.0
        /// Share of items sent at random (live-accuracy estimate). Default 0.02.
        public var explorationRate = 0.02
        /// Share of traffic sent to the teacher at most. Default 0.3.
        public var maxShare = 0.3
        /// Share of traffic sent at most while a shift is under way: the student is unsure of far
        /// more items than its baseline, so the news changed kind (0 = no shift detection; the
        /// daily budget still holds). Default 0.6.
        public var shiftMaxShare = 0.6
        /// With no trained model, the first N items all go to the teacher. Default 500.
        public var coldStartItems = 500
    }

    /// `[trainer]`: continuous distillation.
    public struct Trainer: Sendable, Equatable, Codable {
        /// The defaults.
        public init() {}
        /// `daemon` (trains inside `newsd run`), `separate` (only `newsd trainer` trains) or `off`. Default daemon.
        public var mode = TrainerMode.daemon
        /// New labels since the last model that start a run. Default 200.
        public var minNewLabels = 200
        /// During a shift (the active model unsure of far more items, or the teacher disagreeing
        /// with it far more often, than before) this many new labels start a run (0 = wait for
        /// `min_new_labels`). Default 50.
        public var shiftMinNewLabels = 50
        /// Labels needed at all. Default 100.
        public var minLabels = 100
        /// Seconds after which any new labels start a run. Default 3600.
        public var intervalSeconds: Seconds = 3600.0
        /// Seconds between checks. Default 30.
        public var checkSeconds: Seconds = 30.0
        /// Training threads (a cap, so ingest keeps its cores). Default 1.
        public var threads = 1
        /// Epochs at least. Default 4.
        public var epochs = 4
        /// Optimizer steps at least: small label sets get more epochs (at most 20). Default 250.
        public var minSteps = 250
        /// Recent unlabelled items the active student predicts with at least this margin join the
        /// training set with its probabilities as soft targets (self-training; 0 disables). Default 0 (off: on the shared data it helped random sampling by
        /// 1.8 points macro-F1 and cost uncertainty sampling 0.9; see the experiment script).
        public var pseudoLabelMinMargin = 0.0
        /// Recent items considered for pseudo-labels at most. Default 5000.
        public var pseudoLabelItems = 5000
        /// `head`, `top:K`, `all`, or `auto`: by the teacher labels in store, top:4 below 5,000 and
        /// top:2 from 5,000 (`TrainableScope.automaticDepth`, measured in docs/experiments.md).
        /// Default auto.
        public var trainable = "auto"
        /// Learning rate. Default 0.0001.
        public var learningRate = 1e-4
        /// Share of labels held out for validation, chosen by text hash (never trained on). Default 0.1.
        public var validationFraction = 0.1
        /// ε: promote only if macro-F1 >= active's - ε. Default 0.01.
        public var f1Tolerance = 0.01
        /// δ: and negative-class recall >= active's - δ. Default 0.02.
        public var negativeRecallTolerance = 0.02
        /// Gold sets (CSV with `text` and `label` or `label_experts`) scored for every candidate.
        public var goldSets: [String] = []
        /// Live items on which a candidate's agreement with the active model is measured. Default 300.
        public var shadowItems = 300
        /// A candidate continues from the active model on the labels that arrived since it was
        /// trained plus a replay sample of older ones, instead of starting from the base on every
        /// label: minutes instead of a full run, so the loop adapts while a new kind of news is
        /// still arriving. Default true.
        public var incremental = true
        /// Older labels replayed per new label in an incremental run (at least 200). Default 2.
        public var replayRatio = 2.0
        /// Every Nth model starts from the base on every label (incremental drift is reset; 1 =
        /// always). Default 4.
        public var fullRetrainEvery = 4
        /// Label smoothing ε: a wrong teacher label cannot be fitted with certainty (see
        /// `docs/experiments.md`). Default 0.3.
        public var labelSmoothing = 0.3
        /// Class-balance exponent α (0 off, 1 fully balanced). Default 0.
        public var classBalance = 0.0
        /// Layer-wise learning-rate decay (1 off). Default 1.
        public var layerDecay = 1.0
        /// Label-noise pass: cross-fitted students down-weight the teacher labels they doubt (0 off, else >= 2). Default 0.
        public var noiseFolds = 0
    }

    /// `[log]`.
    public struct Log: Sendable, Equatable, Codable {
        /// The defaults.
        public init() {}
        /// trace, debug, info, notice, warning, error or critical. Default info (reloadable).
        public var level = LogLevel.info
        /// `logfmt` (default) or `json`: one structured line per event on standard error (the
        /// journal under systemd).
        public var format = LogFormat.logfmt
    }

    public var kafka = Kafka()
    public var postgres = Postgres()
    public var model = Model()
    public var portfolio = Portfolio()
    public var ingest = Ingest()
    public var metrics = Metrics()
    public var teacher = Teacher()
    public var trainer = Trainer()
    public var log = Log()
    public var alerts = Alerts()
    public var analysts = Analysts()

    /// The defaults.
    public init() {}
}
