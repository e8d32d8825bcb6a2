//! Which shards an instance tries to take in a round of lease keeping, decided
//! from the listed shards and the scanned lease items alone; the DynamoDB
//! calls stay in `balance`.

use super::shard::SHARD_END;
use crate::aws::lease::{self, text, Item};
use std::collections::{BTreeMap, HashMap, HashSet};

/// A listed shard, as far as the decision needs it.
pub(crate) struct Listed<'a> {
    pub(crate) id: &'a str,
    /// `ParentShardId` and `AdjacentParentShardId`.
    pub(crate) parents: [Option<&'a str>; 2],
}

/// The shards to read, in listing order: not finished, and each parent
/// finished or gone from the stream. `items` are the lease items by shard id.
pub(crate) fn open_shards<'a>(
    listed: &[Listed<'a>],
    items: &HashMap<String, Item>,
) -> Vec<&'a str> {
    let finished = |shard: &str| {
        items
            .get(shard)
            .is_some_and(|item| text(item, "checkpoint") == SHARD_END)
    };
    let ids: HashSet<&str> = listed.iter().map(|s| s.id).collect();
    listed
        .iter()
        .filter(|s| !finished(s.id))
        .filter(|s| {
            s.parents
                .into_iter()
                .flatten()
                .all(|parent| !ids.contains(parent) || finished(parent))
        })
        .map(|s| s.id)
        .collect()
}

/// A lease to try to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Take<'a> {
    pub(crate) shard: &'a str,
    /// The `lease_counter` seen; `None` when the shard has no lease item yet.
    pub(crate) seen: Option<i64>,
    /// The live instance it is taken from to even out the shares.
    pub(crate) from: Option<&'a str>,
}

/// A round's decision.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SharePlan<'a> {
    /// The fair share: ceil(open shards / live instances).
    pub(crate) fair: usize,
    /// The shards this instance reads now (consumers not halted).
    pub(crate) mine: usize,
    /// The leases to try, in order, while `mine` is under `fair`: the free
    /// and lapsed ones (and this instance's own), then at most one taken from
    /// the instance that holds the most, when that one holds more than the
    /// fair share and the free ones cannot make up this instance's share.
    pub(crate) wanted: Vec<Take<'a>>,
}

/// Decides which leases to try to take. `open` from [`open_shards`]; `items`
/// the lease items by shard id; `live` the shards whose consumer runs and is
/// not halted; `lapsed` tells whether another instance's lease lapsed (it is
/// asked only about the leases of other instances on open shards that have no
/// live consumer here, in `open` order).
pub(crate) fn decide<'a>(
    open: &[&'a str],
    items: &'a HashMap<String, Item>,
    owner: &str,
    live: &HashSet<&str>,
    mut lapsed: impl FnMut(&str, &Item) -> bool,
) -> SharePlan<'a> {
    // Who else is alive, and what is free.
    let mut others: BTreeMap<&'a str, Vec<(&'a str, i64)>> = BTreeMap::new();
    let mut free: Vec<(&'a str, Option<i64>)> = Vec::new();
    for &shard in open {
        if live.contains(shard) {
            continue;
        }
        match items.get(shard) {
            None => free.push((shard, None)),
            Some(item) => {
                let counter = lease::number(item, "lease_counter");
                if text(item, "owner") == owner || lapsed(shard, item) {
                    free.push((shard, Some(counter)));
                } else {
                    others
                        .entry(text(item, "owner"))
                        .or_default()
                        .push((shard, counter));
                }
            }
        }
    }
    let fair = open.len().div_ceil(others.len() + 1);
    let mine = live.len();
    let mut wanted: Vec<Take<'a>> = free
        .iter()
        .map(|&(shard, seen)| Take {
            shard,
            seen,
            from: None,
        })
        .collect();
    if mine + free.len() < fair {
        if let Some((victim, theirs)) = others.iter().max_by_key(|(_, shards)| shards.len()) {
            if theirs.len() > fair {
                if let Some(&(shard, counter)) = theirs.last() {
                    wanted.push(Take {
                        shard,
                        seen: Some(counter),
                        from: Some(*victim),
                    });
                }
            }
        }
    }
    SharePlan { fair, mine, wanted }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::lease::{n, s};

    fn item(owner: &str, counter: i64, checkpoint: &str) -> Item {
        let mut item = Item::new();
        item.insert("owner".to_string(), s(owner));
        item.insert("lease_counter".to_string(), n(counter));
        if !checkpoint.is_empty() {
            item.insert("checkpoint".to_string(), s(checkpoint));
        }
        item
    }

    fn items(entries: &[(&str, Item)]) -> HashMap<String, Item> {
        entries
            .iter()
            .map(|(shard, item)| (shard.to_string(), item.clone()))
            .collect()
    }

    fn listed<'a>(id: &'a str, parents: [Option<&'a str>; 2]) -> Listed<'a> {
        Listed { id, parents }
    }

    fn free(shard: &str, seen: Option<i64>) -> Take<'_> {
        Take {
            shard,
            seen,
            from: None,
        }
    }

    fn never(_: &str, _: &Item) -> bool {
        false
    }

    #[test]
    fn finished_shards_and_children_of_unfinished_parents_are_not_open() {
        let leases = items(&[
            ("done", item("x", 1, SHARD_END)),
            ("parent", item("x", 1, "42")),
        ]);
        let shards = [
            listed("done", [None, None]),
            listed("parent", [None, None]),
            listed("child-of-done", [Some("done"), None]),
            listed("child-of-parent", [Some("done"), Some("parent")]),
            listed("child-of-gone", [Some("trimmed"), None]),
        ];
        assert_eq!(
            open_shards(&shards, &leases),
            vec!["parent", "child-of-done", "child-of-gone"]
        );
    }

    #[test]
    fn alone_an_instance_wants_every_open_shard() {
        let leases = items(&[("b", item("me", 7, "")), ("c", item("(released)", 3, ""))]);
        let lapsed = |_: &str, item: &Item| text(item, "owner") == "(released)";
        let plan = decide(&["a", "b", "c"], &leases, "me", &HashSet::new(), lapsed);
        assert_eq!(
            plan,
            SharePlan {
                fair: 3,
                mine: 0,
                wanted: vec![free("a", None), free("b", Some(7)), free("c", Some(3))],
            }
        );
    }

    #[test]
    fn live_leases_of_others_count_their_owners_and_are_not_wanted() {
        let leases = items(&[
            ("a", item("me", 1, "")),
            ("b", item("other", 5, "")),
            ("c", item("gone", 9, "")),
        ]);
        let mut asked = Vec::new();
        let lapsed = |shard: &str, _: &Item| {
            asked.push(shard.to_string());
            shard == "c"
        };
        let live = HashSet::from(["a"]);
        let plan = decide(&["a", "b", "c", "d"], &leases, "me", &live, lapsed);
        // Live instances: me and "other" ("gone" lapsed): 4 shards, 2 each.
        assert_eq!(
            plan,
            SharePlan {
                fair: 2,
                mine: 1,
                wanted: vec![free("c", Some(9)), free("d", None)],
            }
        );
        // Asked only about other instances' leases on shards not running here.
        assert_eq!(asked, vec!["b", "c"]);
    }

    #[test]
    fn one_shard_is_taken_from_the_instance_holding_the_most() {
        let leases = items(&[
            ("a", item("big", 1, "")),
            ("b", item("big", 2, "")),
            ("c", item("big", 3, "")),
            ("d", item("big", 4, "")),
            ("e", item("small", 5, "")),
        ]);
        let plan = decide(
            &["a", "b", "c", "d", "e"],
            &leases,
            "me",
            &HashSet::new(),
            never,
        );
        // 5 shards, 3 instances: 2 each; "big" holds 4, one goes (its last).
        assert_eq!(
            plan,
            SharePlan {
                fair: 2,
                mine: 0,
                wanted: vec![Take {
                    shard: "d",
                    seen: Some(4),
                    from: Some("big"),
                }],
            }
        );
    }

    #[test]
    fn nothing_is_taken_from_instances_within_the_fair_share() {
        let leases = items(&[
            ("a", item("other", 1, "")),
            ("b", item("other", 2, "")),
            ("c", item("third", 3, "")),
            ("d", item("third", 4, "")),
        ]);
        // 4 shards, 3 instances: 2 each, which both others hold.
        let plan = decide(&["a", "b", "c", "d"], &leases, "me", &HashSet::new(), never);
        assert_eq!(plan.fair, 2);
        assert!(plan.wanted.is_empty());
        // 3 shards, 2 instances: 2 each; "other" holds 2, so only the free one.
        let leases = items(&[("a", item("other", 1, "")), ("b", item("other", 2, ""))]);
        let plan = decide(&["a", "b", "c"], &leases, "me", &HashSet::new(), never);
        assert_eq!(plan.fair, 2);
        assert_eq!(plan.wanted, vec![free("c", None)]);
    }

    #[test]
    fn nothing_is_taken_from_others_while_free_shards_make_up_the_share() {
        let leases = items(&[
            ("a", item("big", 1, "")),
            ("b", item("big", 2, "")),
            ("c", item("big", 3, "")),
            ("d", item("big", 4, "")),
            ("e", item("small", 5, "")),
        ]);
        // 9 shards, 3 instances: 3 each; "big" holds 4, but f to i are free.
        let nine = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
        let plan = decide(&nine, &leases, "me", &HashSet::new(), never);
        assert_eq!(plan.fair, 3);
        assert_eq!(
            plan.wanted,
            vec![
                free("f", None),
                free("g", None),
                free("h", None),
                free("i", None)
            ]
        );
        // 7 shards: still 3 each, and f and g make 2: one from "big".
        let seven = ["a", "b", "c", "d", "e", "f", "g"];
        let plan = decide(&seven, &leases, "me", &HashSet::new(), never);
        assert_eq!(plan.fair, 3);
        let stolen = Take {
            shard: "d",
            seen: Some(4),
            from: Some("big"),
        };
        assert_eq!(plan.wanted, vec![free("f", None), free("g", None), stolen]);
        // Running f already: 1 + g make 2, one from "big" still.
        let live = HashSet::from(["f"]);
        let plan = decide(&seven, &leases, "me", &live, never);
        assert_eq!(plan.mine, 1);
        assert_eq!(plan.wanted, vec![free("g", None), stolen]);
    }
}
