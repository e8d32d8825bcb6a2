//! Which records go into each `PutRecords` call, and which remain after its
//! answer: the sink's batching and ordering rules, without I/O.
//!
//! A call carries at most one record per partition key, the oldest not yet
//! written, up to the call's record and byte limits (a record alone over the
//! byte limit goes in a call of its own). After an answer, written records are
//! never sent again and failed ones stay where they are, so the next call picks
//! them again before any later record of their key.

use std::collections::HashSet;

/// Service limits of one `PutRecords` call.
pub(crate) const MAX_RECORDS_PER_CALL: usize = 500;
pub(crate) const MAX_BYTES_PER_CALL: usize = 5 * 1024 * 1024;

/// How much one call may carry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) records: usize,
    /// Data plus partition key, summed over the call's records.
    pub(crate) bytes: usize,
}

/// The limits of Kinesis' `PutRecords`.
pub(crate) const PUT_RECORDS: Limits = Limits {
    records: MAX_RECORDS_PER_CALL,
    bytes: MAX_BYTES_PER_CALL,
};

/// One record waiting for its sequence number.
pub(crate) struct Record {
    pub(crate) partition_key: String,
    pub(crate) data: Vec<u8>,
    /// Index in the batch of the record's last event (its position names the
    /// record in messages).
    pub(crate) last_event: usize,
}

/// The records of a batch, in batch order; a written one leaves an empty slot.
pub(crate) struct Pending {
    slots: Vec<Option<Record>>,
    /// Every slot before it is empty.
    first: usize,
}

impl Pending {
    pub(crate) fn new(records: Vec<Record>) -> Self {
        Pending {
            slots: records.into_iter().map(Some).collect(),
            first: 0,
        }
    }

    /// True once every record is written.
    pub(crate) fn is_done(&self) -> bool {
        self.first >= self.slots.len()
    }

    /// The record at `index` in the batch, unless it is written.
    pub(crate) fn get(&self, index: usize) -> Option<&Record> {
        self.slots.get(index).and_then(Option::as_ref)
    }

    /// Marks the record at `index` written: it is never sent again.
    pub(crate) fn written(&mut self, index: usize) {
        if let Some(slot) = self.slots.get_mut(index) {
            *slot = None;
        }
        while self.first < self.slots.len() && self.slots[self.first].is_none() {
            self.first += 1;
        }
    }

    /// The batch indices of the next call's records, in batch order: the
    /// oldest pending record of each key, until the next such record would
    /// pass the record or byte limit (the first record always goes, whatever
    /// its size).
    pub(crate) fn next_call(&self, limits: Limits) -> Vec<usize> {
        let mut keys = HashSet::new();
        let mut chosen = Vec::new();
        let mut bytes = 0;
        for (i, slot) in self.slots.iter().enumerate().skip(self.first) {
            let Some(record) = slot else { continue };
            if !keys.insert(record.partition_key.as_str()) {
                continue;
            }
            let size = record.data.len() + record.partition_key.len();
            if chosen.len() == limits.records || (bytes + size > limits.bytes && !chosen.is_empty())
            {
                break;
            }
            bytes += size;
            chosen.push(i);
        }
        chosen
    }
}

/// Error codes of a record that are worth sending again.
fn retryable_code(code: &str) -> bool {
    matches!(
        code,
        "ProvisionedThroughputExceededException" | "KMSThrottlingException" | "InternalFailure"
    )
}

/// One entry of a call's answer, in the order of the call's records.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Answer<'a> {
    pub(crate) sequence_number: Option<&'a str>,
    pub(crate) error_code: Option<&'a str>,
}

/// What a call's answer leaves to do.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Settled {
    /// Batch indices of the records written, in call order.
    pub(crate) written: Vec<usize>,
    /// Batch indices of the records to send again (throttled, or an internal
    /// failure), in call order.
    pub(crate) failed: Vec<usize>,
    /// Index in the call (not in the batch) of the first record refused for
    /// good; the answer is not read past it.
    pub(crate) refused: Option<usize>,
}

/// Sorts a call's answer: `chosen` are the call's batch indices, `answers`
/// its answer entries in the same order.
pub(crate) fn retry_after(chosen: &[usize], answers: &[Answer<'_>]) -> Settled {
    let mut settled = Settled::default();
    for (in_call, (&i, answer)) in chosen.iter().zip(answers).enumerate() {
        match (answer.sequence_number, answer.error_code) {
            (Some(_), None) => settled.written.push(i),
            (_, Some(code)) if retryable_code(code) => settled.failed.push(i),
            (_, _) => {
                settled.refused = Some(in_call);
                break;
            }
        }
    }
    settled
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, data_bytes: usize) -> Record {
        Record {
            partition_key: key.to_string(),
            data: vec![b'x'; data_bytes],
            last_event: 0,
        }
    }

    fn pending(records: &[(&str, usize)]) -> Pending {
        Pending::new(records.iter().map(|&(k, n)| record(k, n)).collect())
    }

    const OK: Answer<'static> = Answer {
        sequence_number: Some("1"),
        error_code: None,
    };

    fn failed(code: &'static str) -> Answer<'static> {
        Answer {
            sequence_number: None,
            error_code: Some(code),
        }
    }

    /// Settles a call and marks its written records, like `write` does.
    fn answer(pending: &mut Pending, chosen: &[usize], answers: &[Answer<'_>]) -> Settled {
        let settled = retry_after(chosen, answers);
        for &i in &settled.written {
            pending.written(i);
        }
        settled
    }

    #[test]
    fn a_call_holds_at_most_500_records() {
        let keys: Vec<String> = (0..501).map(|i| format!("k{i}")).collect();
        let mut batch = Pending::new(keys.iter().map(|k| record(k, 10)).collect());
        let chosen = batch.next_call(PUT_RECORDS);
        assert_eq!(chosen, (0..500).collect::<Vec<_>>());
        let answers = vec![OK; chosen.len()];
        answer(&mut batch, &chosen, &answers);
        assert_eq!(batch.next_call(PUT_RECORDS), vec![500]);
        answer(&mut batch, &[500], &[OK]);
        assert!(batch.is_done());
    }

    #[test]
    fn a_call_stops_at_the_first_record_over_the_byte_limit() {
        let limits = Limits {
            records: 10,
            bytes: 100,
        };
        // Sizes count the key: 40, 40, 40, 10 bytes.
        let mut batch = pending(&[("a", 39), ("b", 39), ("c", 39), ("d", 9)]);
        // "d" would fit after "b", but calls keep batch order.
        let chosen = batch.next_call(limits);
        assert_eq!(chosen, vec![0, 1]);
        answer(&mut batch, &chosen, &[OK, OK]);
        assert_eq!(batch.next_call(limits), vec![2, 3]);
    }

    #[test]
    fn calls_stay_under_5_mib() {
        let mib = 1024 * 1024;
        let mut batch = pending(&[("a", 3 * mib), ("b", 2 * mib - 2), ("c", 1)]);
        let chosen = batch.next_call(PUT_RECORDS);
        // 3 MiB + 1 and 2 MiB - 1: exactly 5 MiB.
        assert_eq!(chosen, vec![0, 1]);
        answer(&mut batch, &chosen, &[OK, OK]);
        assert_eq!(batch.next_call(PUT_RECORDS), vec![2]);
    }

    #[test]
    fn a_record_over_the_call_limit_goes_alone() {
        let limits = Limits {
            records: 10,
            bytes: 100,
        };
        let mut batch = pending(&[("a", 10), ("b", 150), ("c", 10)]);
        let chosen = batch.next_call(limits);
        assert_eq!(chosen, vec![0]);
        answer(&mut batch, &chosen, &[OK]);
        let chosen = batch.next_call(limits);
        assert_eq!(chosen, vec![1]);
        answer(&mut batch, &chosen, &[OK]);
        assert_eq!(batch.next_call(limits), vec![2]);
    }

    #[test]
    fn a_partial_failure_keeps_only_the_failed_records_in_batch_order() {
        let mut batch = pending(&[("a", 1), ("b", 1), ("c", 1), ("d", 1), ("e", 1)]);
        let chosen = batch.next_call(PUT_RECORDS);
        assert_eq!(chosen, vec![0, 1, 2, 3, 4]);
        let settled = answer(
            &mut batch,
            &chosen,
            &[
                OK,
                failed("ProvisionedThroughputExceededException"),
                OK,
                failed("InternalFailure"),
                failed("KMSThrottlingException"),
            ],
        );
        assert_eq!(
            settled,
            Settled {
                written: vec![0, 2],
                failed: vec![1, 3, 4],
                refused: None,
            }
        );
        assert_eq!(batch.next_call(PUT_RECORDS), vec![1, 3, 4]);
        assert!(batch.get(0).is_none() && batch.get(1).is_some());
    }

    #[test]
    fn a_refused_record_ends_the_reading_of_the_answer() {
        let settled = retry_after(
            &[3, 5, 8],
            &[OK, failed("ValidationException"), failed("InternalFailure")],
        );
        assert_eq!(
            settled,
            Settled {
                written: vec![3],
                failed: vec![],
                refused: Some(1),
            }
        );
        // Neither a sequence number nor an error code: refused as well.
        let silent = Answer {
            sequence_number: None,
            error_code: None,
        };
        assert_eq!(retry_after(&[7], &[silent]).refused, Some(0));
        // A sequence number with an error code is not a success.
        let both = Answer {
            sequence_number: Some("1"),
            error_code: Some("InternalFailure"),
        };
        assert_eq!(retry_after(&[7], &[both]).failed, vec![7]);
    }

    #[test]
    fn a_failed_record_holds_back_the_later_records_of_its_key() {
        let mut batch = pending(&[("a", 1), ("b", 1), ("a", 1), ("c", 1), ("a", 1)]);
        // One record per key: the second and third "a" wait.
        let chosen = batch.next_call(PUT_RECORDS);
        assert_eq!(chosen, vec![0, 1, 3]);
        answer(
            &mut batch,
            &chosen,
            &[failed("ProvisionedThroughputExceededException"), OK, OK],
        );
        // The failed "a" goes again, alone of its key; the next "a" still waits.
        let chosen = batch.next_call(PUT_RECORDS);
        assert_eq!(chosen, vec![0]);
        answer(&mut batch, &chosen, &[OK]);
        let chosen = batch.next_call(PUT_RECORDS);
        assert_eq!(chosen, vec![2]);
        answer(&mut batch, &chosen, &[OK]);
        assert_eq!(batch.next_call(PUT_RECORDS), vec![4]);
        answer(&mut batch, &[4], &[OK]);
        assert!(batch.is_done());
    }
}
