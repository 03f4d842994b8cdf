import NewsdHTTP
import NewsdPostgres
import NewsdSystem

/// newsd's database schema as numbered migrations. Applied in one transaction under an advisory
/// lock, so two hosts starting at once do not race; applying again is a no-op.
///
/// Rolling upgrades: migrations are additive (new tables, new nullable or defaulted columns, new
/// indexes), so a host still running the previous version keeps working on the upgraded schema.
/// Each applied migration records `oldest_compatible`, the oldest schema version a binary may know
/// and still use the database; a binary refuses to start only when the database requires more
/// than it knows (a breaking migration, which must say so).
public enum Schema {
    /// One step of the schema.
    public struct Migration: Sendable {
        /// Sequential number.
        public var version: Int
        /// What it adds.
        public var description: String
        /// The SQL script.
        public var sql: String
        /// Nil for an additive migration (older binaries keep working); for a breaking one, the
        /// oldest schema version a binary must know to use the database after it.
        public var breaksBefore: Int?

        /// A migration.
        public init(_ version: Int, _ description: String, _ sql: String, breaksBefore: Int? = nil) {
            self.version = version; self.description = description; self.sql = sql; self.breaksBefore = breaksBefore
        }
    }

    /// The migrations, in order. Never edit one that shipped: add a new one.
    public static let migrations: [Migration] = [
        Migration(1, "news items, predictions, companies, mentions, offsets, rejected messages", """
        CREATE TABLE companies (
            id          text PRIMARY KEY,
            name        text NOT NULL,
            tickers     text[] NOT NULL DEFAULT '{}',
            updated_at  timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE company_aliases (
            company_id  text NOT NULL REFERENCES companies(id) ON DELETE CASCADE,
            alias       text NOT NULL,
            kind        text NOT NULL CHECK (kind IN ('name', 'alias', 'ticker')),
            PRIMARY KEY (company_id, kind, alias)
        );
        CREATE TABLE news_items (
            id            bigserial PRIMARY KEY,
            topic         text NOT NULL,
            partition     integer NOT NULL,
            kafka_offset  bigint NOT NULL,
            external_id   text,
            text          text NOT NULL,
            published_at  timestamptz,
            received_at   timestamptz NOT NULL DEFAULT now(),
            source        text,
            UNIQUE (topic, partition, kafka_offset)
        );
        CREATE INDEX news_items_published_at ON news_items (coalesce(published_at, received_at));
        CREATE INDEX news_items_external_id ON news_items (external_id);
        CREATE TABLE predictions (
            id             bigserial PRIMARY KEY,
            item_id        bigint NOT NULL REFERENCES news_items(id) ON DELETE CASCADE,
            model_version  text NOT NULL,
            label          text NOT NULL,
            probabilities  jsonb NOT NULL,
            margin         real NOT NULL,
            entropy        real NOT NULL,
            predicted_at   timestamptz NOT NULL DEFAULT now(),
            UNIQUE (item_id, model_version)
        );
        CREATE INDEX predictions_model_version ON predictions (model_version);
        CREATE TABLE mentions (
            item_id       bigint NOT NULL REFERENCES news_items(id) ON DELETE CASCADE,
            company_id    text NOT NULL,
            matched_by    text NOT NULL,
            published_at  timestamptz NOT NULL,
            PRIMARY KEY (item_id, company_id)
        );
        CREATE INDEX mentions_company_time ON mentions (company_id, published_at);
        CREATE TABLE consumer_offsets (
            group_id     text NOT NULL,
            topic        text NOT NULL,
            partition    integer NOT NULL,
            next_offset  bigint NOT NULL,
            updated_at   timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (group_id, topic, partition)
        );
        CREATE TABLE rejected_messages (
            id            bigserial PRIMARY KEY,
            topic         text NOT NULL,
            partition     integer NOT NULL,
            kafka_offset  bigint NOT NULL,
            raw           bytea NOT NULL,
            reason        text NOT NULL,
            received_at   timestamptz NOT NULL DEFAULT now(),
            UNIQUE (topic, partition, kafka_offset)
        );
        -- The latest prediction of each item (analysts' default).
        CREATE VIEW latest_predictions AS
            SELECT DISTINCT ON (p.item_id) p.*
            FROM predictions p ORDER BY p.item_id, p.predicted_at DESC, p.id DESC;
        -- Per company and day: counts and shares of each sentiment, from the latest predictions.
        CREATE VIEW company_sentiment_daily AS
            SELECT m.company_id, date_trunc('day', m.published_at) AS day,
                   count(*) AS items,
                   count(*) FILTER (WHERE lp.label = 'positive') AS positive,
                   count(*) FILTER (WHERE lp.label = 'negative') AS negative,
                   count(*) FILTER (WHERE lp.label = 'neutral') AS neutral,
                   round(avg(CASE lp.label WHEN 'positive' THEN 1 WHEN 'negative' THEN -1 ELSE 0 END)::numeric, 4) AS net_sentiment
            FROM mentions m JOIN latest_predictions lp ON lp.item_id = m.item_id
            GROUP BY m.company_id, date_trunc('day', m.published_at);
        """),
        Migration(2, "teacher queue, teacher labels, teacher requests", """
        -- Items chosen for the teacher, one per normalised text (the hash deduplicates).
        CREATE TABLE teacher_queue (
            id               bigserial PRIMARY KEY,
            text_hash        text NOT NULL UNIQUE,
            text             text NOT NULL,
            item_id          bigint REFERENCES news_items(id) ON DELETE SET NULL,
            reason           text NOT NULL,            -- cold_start, uncertain, explore, random, manual
            model_version    text,                     -- the student that chose it
            predicted_label  text,                     -- what that student said (live-accuracy estimate)
            margin           real,
            priority         real NOT NULL DEFAULT 0,  -- lower is labelled first
            status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'failed')),
            attempts         integer NOT NULL DEFAULT 0,
            lease_owner      text,
            leased_until     timestamptz,
            last_error       text,
            enqueued_at      timestamptz NOT NULL DEFAULT now(),
            done_at          timestamptz
        );
        CREATE INDEX teacher_queue_pending ON teacher_queue (priority, id) WHERE status = 'pending';
        -- The teacher's verdicts, one per normalised text: never asked twice.
        CREATE TABLE teacher_labels (
            text_hash      text PRIMARY KEY,
            text           text NOT NULL,
            label          text,                       -- NULL when ambiguous
            status         text NOT NULL CHECK (status IN ('labelled', 'ambiguous')),
            distribution   jsonb NOT NULL,             -- vote shares: the soft label
            votes          jsonb NOT NULL,             -- label per sample, FAIL for none
            reasons        jsonb NOT NULL,             -- reason per sample
            teacher_model  text NOT NULL,
            queue_id       bigint,
            labelled_at    timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX teacher_labels_labelled_at ON teacher_labels (labelled_at);
        -- Every HTTP request to the teacher: spend, audit, rate checks.
        CREATE TABLE teacher_requests (
            id                 bigserial PRIMARY KEY,
            queue_id           bigint,
            text_hash          text,
            sample             integer NOT NULL,
            samples            integer NOT NULL,
            status             text NOT NULL,
            http_status        integer,
            prompt_tokens      integer NOT NULL DEFAULT 0,
            completion_tokens  integer NOT NULL DEFAULT 0,
            cost_usd           double precision NOT NULL DEFAULT 0,
            latency_ms         real NOT NULL,
            started_at         timestamptz NOT NULL,
            worker             text NOT NULL,
            error              text
        );
        CREATE INDEX teacher_requests_started_at ON teacher_requests (started_at);
        """),
        Migration(3, "model registry, model artifacts, imported labels", """
        -- Student versions. `version` is the artifact checksum prefix every prediction records;
        -- `seq` numbers them v1, v2, ... for people.
        CREATE TABLE models (
            version        text PRIMARY KEY,
            seq            integer NOT NULL UNIQUE,
            parent         text REFERENCES models(version),
            status         text NOT NULL CHECK (status IN ('candidate', 'active', 'retired', 'rejected')),
            created_at     timestamptz NOT NULL DEFAULT now(),
            activated_at   timestamptz,
            label_counts   jsonb NOT NULL,
            training       jsonb NOT NULL,
            metrics        jsonb NOT NULL,
            checksum       text NOT NULL,
            reasons        text
        );
        CREATE UNIQUE INDEX models_one_active ON models ((status)) WHERE status = 'active';
        -- Artifact files, so every host loads a model from the database it already trusts (no
        -- shared file system to mount, back up and keep consistent with the registry).
        CREATE TABLE model_files (
            version  text NOT NULL REFERENCES models(version) ON DELETE CASCADE,
            name     text NOT NULL,
            content  bytea NOT NULL,
            PRIMARY KEY (version, name)
        );
        -- Human or gold labels (`newsd labels import`); they take precedence over the teacher's.
        CREATE TABLE imported_labels (
            text_hash    text PRIMARY KEY,
            text         text NOT NULL,
            label        text NOT NULL,
            source       text NOT NULL,
            imported_at  timestamptz NOT NULL DEFAULT now()
        );
        -- Predictions made again later (re-scoring, cold-start backfill), as opposed to the one
        -- ingest made; the earlier ones are kept.
        ALTER TABLE predictions ADD COLUMN rescored boolean NOT NULL DEFAULT false;
        """),
        Migration(4, "topic incarnations: a recreated topic's messages are stored apart, never dropped as replays", """
        -- When a partition's offsets start again (topic deleted and recreated, broker data lost),
        -- its new messages would reuse (topic, partition, offset) keys already stored and be
        -- dropped as replays. Each such restart opens a new incarnation N of the partition; its
        -- messages are stored under the topic key `topic#N` (see IngestStore), so nothing is
        -- lost and nothing is counted twice. Additive: older hosts keep working.
        CREATE TABLE topic_incarnations (
            group_id     text NOT NULL,
            topic        text NOT NULL,
            partition    integer NOT NULL,
            incarnation  integer NOT NULL CHECK (incarnation > 0),
            started_at   timestamptz NOT NULL DEFAULT now(),
            reason       text NOT NULL,
            PRIMARY KEY (group_id, topic, partition, incarnation)
        );
        """),
        Migration(5, "alerts, alert drivers and outbox; analysts' rollups, views and read-only role", """
        -- A prediction withdrawn by a rollback of its model: the item's effective prediction is
        -- its newest one that is not withdrawn (or its newest, if all are).
        ALTER TABLE predictions ADD COLUMN IF NOT EXISTS withdrawn boolean NOT NULL DEFAULT false;
        -- IF NOT EXISTS: on a large table, build these first with CREATE INDEX CONCURRENTLY
        -- (docs/operations.md, upgrades), and the migration does not block ingest for them.
        CREATE INDEX IF NOT EXISTS predictions_predicted_at ON predictions (predicted_at);
        CREATE INDEX IF NOT EXISTS predictions_rescored ON predictions (item_id) WHERE rescored;
        CREATE OR REPLACE VIEW latest_predictions AS
            SELECT DISTINCT ON (p.item_id) p.*
            FROM predictions p ORDER BY p.item_id, p.withdrawn, p.predicted_at DESC, p.id DESC;

        -- Negative-shift alerts. One open alert per company (the partial unique index), so hosts
        -- running the detector at once raise it once.
        CREATE TABLE alerts (
            id                   bigserial PRIMARY KEY,
            company_id           text NOT NULL,
            rule                 text NOT NULL CHECK (rule IN ('shift', 'burst')),
            severity             text NOT NULL CHECK (severity IN ('warning', 'critical')),
            state                text NOT NULL CHECK (state IN ('verifying', 'firing', 'resolved', 'suppressed')),
            verification         text NOT NULL DEFAULT 'pending'
                                 CHECK (verification IN ('pending', 'confirmed', 'partly_confirmed', 'contradicted', 'unverified')),
            window_start         timestamptz NOT NULL,
            window_end           timestamptz NOT NULL,
            observed_share       double precision NOT NULL,
            baseline_share       double precision NOT NULL,
            window_weight        double precision NOT NULL,
            window_negative      double precision NOT NULL,
            window_items         integer NOT NULL,
            p_value              double precision NOT NULL,
            drivers_checked      integer NOT NULL DEFAULT 0,
            drivers_confirmed    integer NOT NULL DEFAULT 0,
            drivers_contradicted integer NOT NULL DEFAULT 0,
            parameters           jsonb NOT NULL,
            raised_by            text NOT NULL,
            raised_at            timestamptz NOT NULL DEFAULT now(),
            verify_started_at    timestamptz NOT NULL DEFAULT now(),
            resolved_at          timestamptz,
            acked_at             timestamptz,
            acked_by             text
        );
        CREATE UNIQUE INDEX alerts_one_open ON alerts (company_id) WHERE state IN ('verifying', 'firing');
        CREATE INDEX alerts_company_raised ON alerts (company_id, raised_at);
        CREATE INDEX alerts_raised ON alerts (raised_at);
        -- The sentences that drove an alert, with the student's and (after verification) the
        -- teacher's label.
        CREATE TABLE alert_drivers (
            alert_id              bigint NOT NULL REFERENCES alerts(id) ON DELETE CASCADE,
            rank                  integer NOT NULL,
            item_id               bigint NOT NULL,
            text                  text NOT NULL,
            published_at          timestamptz NOT NULL,
            student_label         text NOT NULL,
            negative_probability  real NOT NULL,
            model_version         text NOT NULL,
            teacher_label         text,
            teacher_status        text,
            PRIMARY KEY (alert_id, rank)
        );
        -- Deliveries to do, written in the transaction that changes the alert: retried with
        -- backoff until done, each with its idempotency key (the same on every retry).
        CREATE TABLE alert_outbox (
            id               bigserial PRIMARY KEY,
            alert_id         bigint NOT NULL REFERENCES alerts(id) ON DELETE CASCADE,
            sink             text NOT NULL CHECK (sink IN ('alertmanager', 'webhook', 'notify')),
            event            text NOT NULL CHECK (event IN ('firing', 'resolved')),
            idempotency_key  text NOT NULL UNIQUE,
            payload          jsonb NOT NULL,
            attempts         integer NOT NULL DEFAULT 0,
            next_attempt_at  timestamptz NOT NULL DEFAULT now(),
            created_at       timestamptz NOT NULL DEFAULT now(),
            delivered_at     timestamptz,
            failed_at        timestamptz,
            last_error       text
        );
        CREATE INDEX alert_outbox_due ON alert_outbox (next_attempt_at) WHERE delivered_at IS NULL AND failed_at IS NULL;
        CREATE INDEX alert_outbox_alert ON alert_outbox (alert_id, sink, id);

        -- Analysts' rollups, recomputed per (company, hour) from the effective predictions
        -- whenever a prediction or mention of that hour is inserted, changed or deleted: the
        -- triggers only note what changed; `newsd run` (one host at a time) recomputes.
        CREATE TABLE rollup_dirty_items (item_id bigint NOT NULL);
        CREATE TABLE rollup_dirty_hours (company_id text NOT NULL, hour timestamptz NOT NULL);
        CREATE FUNCTION newsd_note_predictions() RETURNS trigger LANGUAGE plpgsql AS $fn$
        BEGIN
            IF TG_OP = 'DELETE' THEN
                INSERT INTO rollup_dirty_items SELECT DISTINCT item_id FROM old_rows;
            ELSE
                INSERT INTO rollup_dirty_items SELECT DISTINCT item_id FROM new_rows;
            END IF;
            RETURN NULL;
        END $fn$;
        CREATE FUNCTION newsd_note_mentions() RETURNS trigger LANGUAGE plpgsql AS $fn$
        BEGIN
            IF TG_OP = 'DELETE' THEN
                INSERT INTO rollup_dirty_hours SELECT DISTINCT company_id, date_trunc('hour', published_at, 'UTC') FROM old_rows;
            ELSE
                INSERT INTO rollup_dirty_hours SELECT DISTINCT company_id, date_trunc('hour', published_at, 'UTC') FROM new_rows;
            END IF;
            RETURN NULL;
        END $fn$;
        CREATE TRIGGER predictions_note_insert AFTER INSERT ON predictions REFERENCING NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION newsd_note_predictions();
        CREATE TRIGGER predictions_note_update AFTER UPDATE ON predictions REFERENCING NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION newsd_note_predictions();
        CREATE TRIGGER predictions_note_delete AFTER DELETE ON predictions REFERENCING OLD TABLE AS old_rows
            FOR EACH STATEMENT EXECUTE FUNCTION newsd_note_predictions();
        CREATE TRIGGER mentions_note_insert AFTER INSERT ON mentions REFERENCING NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION newsd_note_mentions();
        CREATE TRIGGER mentions_note_delete AFTER DELETE ON mentions REFERENCING OLD TABLE AS old_rows
            FOR EACH STATEMENT EXECUTE FUNCTION newsd_note_mentions();
        -- Everything stored before this migration is due once.
        INSERT INTO rollup_dirty_hours SELECT DISTINCT company_id, date_trunc('hour', published_at, 'UTC') FROM mentions;

        \(rollupTable("sentiment_hourly", unit: "hour"))
        \(rollupTable("sentiment_daily", unit: "day"))

        -- What analysts query (docs/analysts.md).
        \(rollupView("company_hourly", of: "sentiment_hourly", unit: "hour"))
        \(rollupView("company_daily", of: "sentiment_daily", unit: "day"))
        -- Every sentence with its company and effective prediction (filter by company and time:
        -- the mentions index makes that fast). Behind any aggregate: the same company and hour/day.
        CREATE VIEW company_sentences AS
            SELECT m.company_id, m.published_at, date_trunc('hour', m.published_at, 'UTC') AS hour,
                   date_trunc('day', m.published_at, 'UTC') AS day, n.id AS item_id, n.text, n.source,
                   p.label, (p.probabilities->>'negative')::real AS p_negative, (p.probabilities->>'positive')::real AS p_positive,
                   p.margin, p.model_version, mo.seq AS model_seq, p.predicted_at
            FROM mentions m
            JOIN news_items n ON n.id = m.item_id
            CROSS JOIN LATERAL (SELECT * FROM predictions p WHERE p.item_id = m.item_id
                                ORDER BY p.withdrawn, p.predicted_at DESC, p.id DESC LIMIT 1) p
            LEFT JOIN models mo ON mo.version = p.model_version;
        -- The latest sentences of each company (any number: ORDER BY published_at DESC LIMIT n).
        CREATE VIEW company_latest_sentences AS
            SELECT * FROM company_sentences;
        -- Agreement between model versions on the items scored by both (rescoring, backfills);
        -- refreshed by `newsd run` (analysts.agreement_refresh_seconds) when items were rescored.
        CREATE MATERIALIZED VIEW model_agreement AS
            SELECT a.model_version AS version_a, ma.seq AS seq_a, b.model_version AS version_b, mb.seq AS seq_b,
                   count(*) AS items,
                   count(*) FILTER (WHERE a.label = b.label) AS agreed,
                   round(avg((a.label = b.label)::int)::numeric, 4) AS agreement,
                   count(*) FILTER (WHERE a.label = 'negative' AND b.label <> 'negative') AS negative_only_a,
                   count(*) FILTER (WHERE b.label = 'negative' AND a.label <> 'negative') AS negative_only_b
            FROM predictions b
            JOIN predictions a ON a.item_id = b.item_id AND a.id < b.id
            LEFT JOIN models ma ON ma.version = a.model_version
            LEFT JOIN models mb ON mb.version = b.model_version
            WHERE b.rescored
            GROUP BY a.model_version, ma.seq, b.model_version, mb.seq;
        CREATE UNIQUE INDEX model_agreement_pair ON model_agreement (version_a, version_b);
        -- Alerts with their drivers in one row each, for analysts.
        CREATE VIEW alert_history AS
            SELECT a.id, a.company_id, c.name AS company_name, a.rule, a.severity, a.state, a.verification,
                   a.observed_share, a.baseline_share, a.window_items, a.p_value, a.window_start, a.window_end,
                   a.raised_at, a.resolved_at, a.acked_at, a.drivers_checked, a.drivers_confirmed, a.drivers_contradicted,
                   (SELECT json_agg(json_build_object('text', d.text, 'student', d.student_label, 'p_negative', d.negative_probability,
                                                      'teacher', d.teacher_label) ORDER BY d.rank)
                    FROM alert_drivers d WHERE d.alert_id = a.id) AS drivers
            FROM alerts a LEFT JOIN companies c ON c.id = a.company_id;

        -- The analysts' read-only role (no login: grant it to a login role, see docs/analysts.md).
        -- Creating a role needs CREATEROLE; without it the migration says so and goes on.
        DO $do$
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'newsd_analyst') THEN
                CREATE ROLE newsd_analyst NOLOGIN;
            END IF;
        EXCEPTION
            WHEN insufficient_privilege THEN
                RAISE NOTICE 'newsd_analyst not created (no CREATEROLE): see docs/analysts.md';
            WHEN duplicate_object THEN
                NULL;   -- roles are cluster-wide: another database's migration created it just now
        END $do$;
        DO $do$
        BEGIN
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'newsd_analyst') THEN
                EXECUTE format('GRANT CONNECT ON DATABASE %I TO newsd_analyst', current_database());
                GRANT USAGE ON SCHEMA public TO newsd_analyst;
                GRANT SELECT ON companies, company_aliases, news_items, predictions, mentions, models, teacher_labels,
                                alerts, alert_drivers, sentiment_hourly, sentiment_daily, latest_predictions,
                                company_sentiment_daily, company_hourly, company_daily, company_sentences,
                                company_latest_sentences, model_agreement, alert_history TO newsd_analyst;
            END IF;
        END $do$;
        """),
    ]

    /// A rollup table per `unit` (hour or day) of one company: sums, so hours add up to days.
    static func rollupTable(_ name: String, unit: String) -> String {
        """
        CREATE TABLE \(name) (
                    company_id      text NOT NULL,
                    \(unit.padding(toLength: 15, withPad: " ", startingAt: 0)) timestamptz NOT NULL,
                    items           integer NOT NULL,
                    positive        integer NOT NULL,
                    negative        integer NOT NULL,
                    neutral         integer NOT NULL,
                    p_positive_sum  double precision NOT NULL,
                    p_negative_sum  double precision NOT NULL,
                    p_neutral_sum   double precision NOT NULL,
                    low_confidence  integer NOT NULL,
                    model_versions  text[] NOT NULL,
                    computed_at     timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (company_id, \(unit))
                );
                CREATE INDEX \(name)_\(unit) ON \(name) (\(unit));
        """
    }

    /// The analysts' view of a rollup table: shares and means instead of sums.
    static func rollupView(_ name: String, of table: String, unit: String) -> String {
        """
        CREATE VIEW \(name) AS
                    SELECT company_id, \(unit), items, positive, negative, neutral,
                           round(((positive - negative)::numeric / nullif(items, 0)), 4) AS net_sentiment,
                           round((p_positive_sum / nullif(items, 0))::numeric, 4) AS mean_p_positive,
                           round((p_negative_sum / nullif(items, 0))::numeric, 4) AS mean_p_negative,
                           round((p_neutral_sum / nullif(items, 0))::numeric, 4) AS mean_p_neutral,
                           round((low_confidence::numeric / nullif(items, 0)), 4) AS low_confidence_share,
                           model_versions
                    FROM \(table);
        """
    }

    /// The newest schema version this build knows.
    public static var latestVersion: Int { migrations.last?.version ?? 0 }

    /// Applies the missing ones of `migrations` (this build's, unless a test plays another
    /// version); returns the versions applied. A database already past them is used as it is when
    /// its migrations since were additive, and refused (with the versions) when one of them breaks
    /// binaries this old.
    @discardableResult
    public static func migrate(_ db: PostgresConnection, migrations: [Migration] = Schema.migrations) throws -> [Int] {
        let known = migrations.last?.version ?? 0
        return try db.transaction {
            try db.execute("SELECT pg_advisory_xact_lock($1)", [String(AdvisoryLock.migration)])
            try db.execute("""
                CREATE TABLE IF NOT EXISTS schema_migrations (
                    version integer PRIMARY KEY, description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())
                """)
            // Additive bookkeeping: old binaries read only `version`.
            try db.execute("ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS oldest_compatible integer NOT NULL DEFAULT 1")
            let rows = try db.query("SELECT version, oldest_compatible FROM schema_migrations").typed
            var applied = Set<Int>(), required = 1
            for row in rows {
                applied.insert(try row.decode("version", as: Int.self))
                required = max(required, try row.decode("oldest_compatible", as: Int.self))
            }
            if required > known {
                throw PostgresError(sqlState: nil, message: "database schema version \(applied.max() ?? 0) requires a newsd that knows schema \(required) or newer; this one knows \(known): upgrade newsd", permanent: true)
            }
            if let newest = applied.max(), newest > known { return [] }   // newer but compatible: an upgrade in progress
            var done: [Int] = []
            for m in migrations where !applied.contains(m.version) {
                try db.executeScript(m.sql)
                required = max(required, m.breaksBefore ?? required)
                try db.execute("INSERT INTO schema_migrations (version, description, oldest_compatible) VALUES ($1, $2, $3)",
                               [String(m.version), m.description, String(required)])
                done.append(m.version)
            }
            return done
        }
    }

    /// Words that make a migration script non-additive (it would break hosts still running the
    /// previous version during a rolling upgrade); a test keeps additive migrations free of them.
    public static let breakingStatements = ["DROP TABLE", "DROP COLUMN", "RENAME", "ALTER COLUMN", "SET NOT NULL", "DROP CONSTRAINT", "TRUNCATE"]
}

/// Postgres advisory lock keys: one per job only one host may run at a time.
public enum AdvisoryLock {
    /// Schema migrations (transaction-scoped).
    public static let migration: Int64 = 0x6E_6577_7364
    /// Registry changes: promote, rollback (transaction-scoped).
    public static let registry = migration + 1
    /// Training a candidate (session-scoped).
    public static let training = migration + 2
    /// The cold-start backfill (session-scoped).
    public static let backfill = migration + 3
    /// The analysts' rollup pass (transaction-scoped).
    public static let rollup = migration + 4
    /// The `model_agreement` refresh (transaction-scoped).
    public static let agreement = migration + 5
}
