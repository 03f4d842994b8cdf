import CRdKafka
import Foundation

/// Decides where consumption starts when partitions are assigned: returns the next offset to read
/// for each partition it knows (e.g. from offsets stored in Postgres); the others start at the
/// configured `auto.offset.reset` policy.
public typealias AssignmentHandler = ([TopicPartition]) throws -> [TopicPartition: Int64]

/// Told which partitions were taken away, before they are given to another member.
public typealias RevocationHandler = ([TopicPartition]) -> Void

/// A consumer-group member with manual offsets. Not thread-safe: one thread polls it (its
/// rebalance callbacks run inside `poll`, on that thread). Owns its `rd_kafka_t`.
public final class KafkaConsumer {
    private let handle: OpaquePointer
    private var closed = false
    /// Called on assignment, inside `poll`.
    public var onAssign: AssignmentHandler = { _ in [:] }
    /// Called on revocation, inside `poll`.
    public var onRevoke: RevocationHandler = { _ in }
    /// Partitions currently assigned.
    public private(set) var assignment: Set<TopicPartition> = []
    /// The last error librdkafka reported through its error callback (e.g. all brokers down).
    public private(set) var lastError: KafkaError?
    /// Why the last assignment failed (e.g. Postgres unreachable while reading stored offsets).
    public private(set) var assignmentError: Error?

    /// Creates a consumer in `groupID` with extra librdkafka `properties` (security, timeouts...).
    /// `enable.auto.commit` and `enable.auto.offset.store` are forced off: offsets are ours.
    public init(brokers: String, groupID: String, properties: [String: String] = [:]) throws {
        var props = properties
        props["bootstrap.servers"] = brokers
        props["group.id"] = groupID
        props["enable.auto.commit"] = "false"
        props["enable.auto.offset.store"] = "false"
        if props["auto.offset.reset"] == nil { props["auto.offset.reset"] = "earliest" }
        // Offsets are seeked in an eager-rebalance callback (rd_kafka_assign); the cooperative and
        // KIP-848 protocols need incremental calls this consumer does not make.
        if let strategy = props["partition.assignment.strategy"], strategy.contains("cooperative") {
            throw KafkaError(message: "kafka property partition.assignment.strategy=\(strategy): cooperative rebalancing is not supported (use range or roundrobin)")
        }
        if let proto = props["group.protocol"], proto != "classic" {
            throw KafkaError(message: "kafka property group.protocol=\(proto): only the classic group protocol is supported")
        }
        let conf = try KafkaConfiguration(props)
        let callbackTarget = CallbackTarget()
        rd_kafka_conf_set_opaque(conf.handle, Unmanaged.passUnretained(callbackTarget).toOpaque())
        rd_kafka_conf_set_rebalance_cb(conf.handle) { rk, err, partitions, opaque in
            guard let opaque, let partitions else { return }
            if let consumer = Unmanaged<CallbackTarget>.fromOpaque(opaque).takeUnretainedValue().consumer {
                consumer.rebalance(rk, err, partitions)
            } else {
                // Closing from deinit: the Swift object is gone; librdkafka still waits for the
                // (un)assign it asked for, or close would hang.
                rd_kafka_assign(rk, err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS ? partitions : nil)
            }
        }
        rd_kafka_conf_set_error_cb(conf.handle) { _, err, reason, opaque in
            guard let opaque else { return }
            let message = reason.map { String(cString: $0) } ?? ""
            Unmanaged<CallbackTarget>.fromOpaque(opaque).takeUnretainedValue().consumer?.lastError =
                KafkaError(code: rd_kafka_resp_err_t(rawValue: err), context: message)
        }
        handle = try makeKafkaHandle(RD_KAFKA_CONSUMER, conf)
        target = callbackTarget
        callbackTarget.consumer = self
        rd_kafka_poll_set_consumer(handle)
    }

    /// Keeps the callback target alive; it points back weakly so `deinit` can run.
    private let target: CallbackTarget

    deinit {
        if !closed { rd_kafka_consumer_close(handle) }
        rd_kafka_destroy(handle)
    }

    /// The partition's high watermark as last seen in a fetch response (librdkafka's cache: no
    /// broker round trip), or nil when none was seen yet.
    public func highWatermark(_ tp: TopicPartition) -> Int64? {
        var low: Int64 = -1, high: Int64 = -1
        let err = rd_kafka_get_watermark_offsets(handle, tp.topic, tp.partition, &low, &high)
        return err == RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0 ? high : nil
    }

    /// Subscribes to topics (group-managed assignment).
    public func subscribe(_ topics: [String]) throws {
        let list = PartitionList(topics.map { (TopicPartition(topic: $0, partition: RD_KAFKA_PARTITION_UA), nil) })
        let err = withExtendedLifetime(list) { rd_kafka_subscribe(handle, list.handle) }
        guard err == RD_KAFKA_RESP_ERR_NO_ERROR else { throw KafkaError(code: err, context: "subscribe to \(topics)") }
    }

    /// Waits up to `timeout` seconds for one record. Rebalance callbacks may run inside. Returns nil
    /// on timeout or end of partition; consumer errors that are not fatal are recorded in `lastError`.
    public func poll(timeout: Double) throws -> KafkaRecord? {
        guard let msg = rd_kafka_consumer_poll(handle, Int32(timeout * 1000)) else { return nil }
        defer { rd_kafka_message_destroy(msg) }
        let m = msg.pointee
        if m.err != RD_KAFKA_RESP_ERR_NO_ERROR {
            if m.err == RD_KAFKA_RESP_ERR__PARTITION_EOF { return nil }
            let e = KafkaError(code: m.err, context: "consume")
            if e.isRetriable || m.err == RD_KAFKA_RESP_ERR__TRANSPORT { lastError = e; return nil }
            if m.err == RD_KAFKA_RESP_ERR__FATAL { throw e }
            lastError = e
            return nil
        }
        let topic = String(cString: rd_kafka_topic_name(m.rkt))
        let value = m.payload.map { Array(UnsafeRawBufferPointer(start: $0, count: m.len)) } ?? []
        let key = m.key.map { Array(UnsafeRawBufferPointer(start: $0, count: m.key_len)) }
        var tsType = RD_KAFKA_TIMESTAMP_NOT_AVAILABLE
        let ts = rd_kafka_message_timestamp(msg, &tsType)
        lastError = nil
        return KafkaRecord(topicPartition: TopicPartition(topic: topic, partition: m.partition), offset: m.offset,
                           key: key, value: value, timestampMilliseconds: tsType == RD_KAFKA_TIMESTAMP_NOT_AVAILABLE ? nil : ts)
    }

    /// Commits next offsets to Kafka (asynchronously) so that standard lag tools see progress.
    /// The authoritative offsets live in Postgres; a failed commit here loses nothing.
    public func commit(_ nextOffsets: [TopicPartition: Int64]) {
        guard !nextOffsets.isEmpty else { return }
        let list = PartitionList(nextOffsets.map { ($0.key, $0.value) })
        _ = withExtendedLifetime(list) { rd_kafka_commit(handle, list.handle, 1) }
    }

    /// Leaves the group (revocation runs) and stops fetching.
    public func close() {
        guard !closed else { return }
        closed = true
        rd_kafka_consumer_close(handle)
    }

    fileprivate func rebalance(_ rk: OpaquePointer?, _ err: rd_kafka_resp_err_t,
                               _ partitions: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>) {
        let entries = PartitionList.entries(of: partitions)
        let tps = entries.map(\.0)
        if err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS {
            do {
                let start = try onAssign(tps)
                for i in 0..<Int(partitions.pointee.cnt) {
                    let e = newsd_kafka_partition_at(partitions, Int32(i))!
                    let tp = TopicPartition(topic: String(cString: e.pointee.topic), partition: e.pointee.partition)
                    if let next = start[tp] { e.pointee.offset = next }
                }
                assignmentError = nil
                rd_kafka_assign(rk, partitions)
                assignment = Set(tps)
            } catch {
                // Without the stored offsets we must not consume: take no partitions; the poll
                // loop sees `assignmentError` and rejoins, which triggers a new assignment.
                assignmentError = error
                rd_kafka_assign(rk, nil)
                assignment = []
            }
        } else {
            onRevoke(tps)
            rd_kafka_assign(rk, nil)
            assignment = []
        }
    }

    /// Unsubscribes and subscribes again, to get a fresh assignment after `assignmentError`.
    public func resubscribe(_ topics: [String]) throws {
        assignmentError = nil
        _ = rd_kafka_unsubscribe(handle)
        try subscribe(topics)
    }
}

/// Target of librdkafka callbacks, reached through the configuration's opaque pointer
/// (a `@convention(c)` closure cannot capture context).
final class CallbackTarget {
    weak var consumer: KafkaConsumer?
}
