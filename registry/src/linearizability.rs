//! A linearizability checker for recorded histories of registry operations.
//!
//! The registry is a map `name -> owner`; a history is a list of [`Event`]s,
//! each an operation ([`Op::Claim`] or [`Op::Read`]) on one name by one
//! client, with its invocation and response times and the answer the client
//! saw ([`Outcome`]). [`check`] decides whether some total order of the
//! operations (a *linearization*) exists that respects real time (an
//! operation that returned before another was invoked comes first) and in
//! which every answer is the one the sequential registry would give.
//!
//! Linearizability is *local*: a history is linearizable iff its restriction
//! to every object is, so each name is checked on its own.
//!
//! Per name, the search is Wing & Gong's with Lowe's memoization (the "WGL"
//! algorithm of Knossos and Porcupine): from the set of operations already
//! linearized and the state they left, pick an operation that may go next
//! (one invoked no later than the earliest response among the operations
//! still pending), apply it to the sequential model if the answer it got is
//! the model's, and recurse; backtrack when nothing fits. Every
//! `(linearized set, state)` pair is explored at most once, the set kept as
//! a bitset. Two reductions keep the search small, both sound for any model:
//!
//! - an operation that may go next, matches the model and leaves the state
//!   as it is (a read, an idempotent or refused claim) is linearized at once,
//!   without branching: moving it to the front of any valid completion keeps
//!   that completion valid;
//! - an operation whose outcome is unknown (the client timed out, or saw a
//!   leader change) may have taken effect at any moment after its invocation
//!   or never, so it has no deadline, and it is only ever linearized where
//!   it changes the state: elsewhere it would constrain nothing. An unknown
//!   read constrains nothing at all and is dropped.
//!
//! For this model (an owner, once set, never changes) the search is
//! shallow: from the free name it branches once on which claim took it,
//! and everything after that is decided without branching. The memo key
//! relies on that monotony (see `Search::run`); a `Release` operation
//! would need the unknown claims linearized so far in the key.
//!
//! The search succeeds once every operation with a known outcome is
//! linearized (unknown claims left over simply never took effect). It is
//! bounded by a number of explored states per name, past which the verdict
//! is [`CheckError::Undecided`] rather than a violation.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

/// Default bound on the states explored for one name by [`check`].
pub const DEFAULT_MAX_STATES: u64 = 10_000_000;

/// An operation on one name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Op {
    /// Claim the name for `owner`.
    Claim { owner: String },
    /// Read the name's current owner.
    Read,
}

/// The answer a client got for an operation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The claim succeeded: the name was free, or already the claimant's.
    Granted,
    /// The claim failed: the name is held by `owner`.
    Taken { owner: String },
    /// The read saw this owner (`None`: the name is free).
    Read(Option<String>),
    /// No answer (timeout, leader change, 503 after the request may have been
    /// sent): a claim may or may not have taken effect, at any time after
    /// its invocation; a read tells nothing.
    Unknown,
}

/// One recorded operation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Event {
    /// The client that issued it.
    pub process: u64,
    /// The name it is about.
    pub name: String,
    /// What was asked.
    pub op: Op,
    /// When it was invoked (any monotone unit, e.g. nanoseconds).
    pub invoked: u64,
    /// When its answer came back; `None` if it never did.
    ///
    /// An operation with a known outcome but no response time is taken to
    /// have returned at some unknown time (no deadline). For an
    /// [`Outcome::Unknown`] claim the response time is ignored: the claim
    /// may take effect even after the client gave up on it.
    pub returned: Option<u64>,
    /// The answer.
    pub outcome: Outcome,
}

/// What a successful [`check`] looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Report {
    /// Distinct names in the history.
    pub names: usize,
    /// Events in the history.
    pub operations: usize,
    /// Events with an [`Outcome::Unknown`] outcome.
    pub unknown: usize,
    /// Search states explored, over all names.
    pub states_explored: u64,
}

/// A name whose sub-history cannot be linearized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The name.
    pub name: String,
    /// Every event of the history about this name, in history order.
    pub events: Vec<Event>,
    /// How far the search got and what blocked it; events are referred to
    /// as `#i`, their index in [`Violation::events`].
    pub why: String,
}

/// Why [`check`] did not accept a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckError {
    /// The history is not linearizable.
    Violation(Violation),
    /// The search for `name` gave up after exploring `states` states: the
    /// history may or may not be linearizable.
    Undecided { name: String, states: u64 },
    /// The event at `index` in the history is not a well-formed record: it
    /// returned before it was invoked, or its outcome does not belong to its
    /// operation.
    Malformed {
        name: String,
        index: usize,
        why: String,
    },
}

/// Checks that `history` is linearizable, exploring at most
/// [`DEFAULT_MAX_STATES`] states per name.
pub fn check(history: &[Event]) -> Result<Report, CheckError> {
    check_with_limit(history, DEFAULT_MAX_STATES)
}

/// Checks that `history` is linearizable, exploring at most
/// `max_states_per_name` states per name before answering
/// [`CheckError::Undecided`].
///
/// Names are checked in lexicographic order; the first one that fails is
/// reported.
pub fn check_with_limit(history: &[Event], max_states_per_name: u64) -> Result<Report, CheckError> {
    let mut by_name: BTreeMap<&str, Vec<(usize, &Event)>> = BTreeMap::new();
    for (index, event) in history.iter().enumerate() {
        by_name
            .entry(event.name.as_str())
            .or_default()
            .push((index, event));
    }
    let mut report = Report {
        names: by_name.len(),
        operations: history.len(),
        unknown: history
            .iter()
            .filter(|e| e.outcome == Outcome::Unknown)
            .count(),
        states_explored: 0,
    };
    for (name, events) in by_name {
        let states = check_name(name, &events, max_states_per_name)?;
        report.states_explored = report.states_explored.saturating_add(states);
    }
    Ok(report)
}

/// Checks the sub-history of one name, given with each event's index in the
/// history; returns the states explored.
fn check_name(name: &str, indexed: &[(usize, &Event)], max_states: u64) -> Result<u64, CheckError> {
    let events: Vec<&Event> = indexed.iter().map(|&(_, e)| e).collect();
    let mut owners = Owners::default();
    let mut required = Vec::new();
    let mut optional = Vec::new();
    for (index, &(in_history, event)) in indexed.iter().enumerate() {
        let malformed = |why: &str| CheckError::Malformed {
            name: name.to_owned(),
            index: in_history,
            why: why.to_owned(),
        };
        if event
            .returned
            .is_some_and(|returned| returned < event.invoked)
        {
            return Err(malformed("returned before it was invoked"));
        }
        let kind = match &event.op {
            Op::Claim { owner } => Kind::Claim(owners.id(owner)),
            Op::Read => Kind::Read,
        };
        let expected = match (&event.op, &event.outcome) {
            (_, Outcome::Unknown) => None,
            (Op::Claim { .. }, Outcome::Granted) => Some(Answer::Granted),
            (Op::Claim { .. }, Outcome::Taken { owner }) => Some(Answer::Taken(owners.id(owner))),
            (Op::Read, Outcome::Read(owner)) => {
                Some(Answer::Read(owner.as_deref().map(|o| owners.id(o))))
            }
            (Op::Claim { .. }, Outcome::Read(_)) => {
                return Err(malformed("a claim answered with a read's outcome"));
            }
            (Op::Read, Outcome::Granted | Outcome::Taken { .. }) => {
                return Err(malformed("a read answered with a claim's outcome"));
            }
        };
        let call = Call {
            event: index,
            kind,
            expected,
            invoked: event.invoked,
            // An unknown claim may take effect after the client gave up.
            deadline: match expected {
                Some(_) => event.returned.unwrap_or(NO_DEADLINE),
                None => NO_DEADLINE,
            },
        };
        match (expected, kind) {
            (Some(_), _) => required.push(call),
            (None, Kind::Claim(_)) => optional.push(call),
            (None, Kind::Read) => {} // constrains nothing
        }
    }
    required.sort_by_key(|c| (c.invoked, c.deadline, c.event));
    optional.sort_by_key(|c| (c.invoked, c.event));
    let search = Search::new(required, optional);
    match search.run(max_states) {
        Verdict::Linearizable { states } => Ok(states),
        Verdict::Undecided { states } => Err(CheckError::Undecided {
            name: name.to_owned(),
            states,
        }),
        Verdict::Violation { done, state } => Err(CheckError::Violation(Violation {
            name: name.to_owned(),
            events: events.iter().map(|&e| e.clone()).collect(),
            why: search.explain(&done, state, &events, &owners),
        })),
    }
}

/// "Never returned": no deadline.
const NO_DEADLINE: u64 = u64::MAX;

/// An owner, interned per name.
type OwnerId = usize;

/// The sequential registry's state for one name: its owner, if any.
type State = Option<OwnerId>;

/// Interns the owners mentioned in one name's sub-history.
#[derive(Debug, Default)]
struct Owners {
    names: Vec<String>,
    ids: HashMap<String, OwnerId>,
}

impl Owners {
    fn id(&mut self, owner: &str) -> OwnerId {
        if let Some(&id) = self.ids.get(owner) {
            return id;
        }
        let id = self.names.len();
        self.names.push(owner.to_owned());
        self.ids.insert(owner.to_owned(), id);
        id
    }

    fn describe(&self, state: State) -> String {
        match state.and_then(|id| self.names.get(id)) {
            None => "free".to_owned(),
            Some(owner) => format!("owned by {owner:?}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Claim(OwnerId),
    Read,
}

/// The sequential registry's answer to an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Granted,
    Taken(OwnerId),
    Read(State),
}

/// The sequential model: the state after `kind` and its answer.
fn model(state: State, kind: Kind) -> (State, Answer) {
    match (kind, state) {
        (Kind::Claim(owner), None) => (Some(owner), Answer::Granted),
        (Kind::Claim(owner), Some(holder)) if holder == owner => (state, Answer::Granted),
        (Kind::Claim(_), Some(holder)) => (state, Answer::Taken(holder)),
        (Kind::Read, _) => (state, Answer::Read(state)),
    }
}

/// One operation as the search sees it.
#[derive(Debug, Clone, Copy)]
struct Call {
    /// Index in the name's event list.
    event: usize,
    kind: Kind,
    /// The answer recorded; `None` if unknown.
    expected: Option<Answer>,
    invoked: u64,
    /// Latest time it can be linearized at ([`NO_DEADLINE`] if none).
    deadline: u64,
}

impl Call {
    /// The state after this call from `state`, if its answer is the model's.
    fn apply(&self, state: State) -> Option<State> {
        let (next, answer) = model(state, self.kind);
        self.expected
            .is_none_or(|expected| expected == answer)
            .then_some(next)
    }
}

/// A set of linearized calls (indices into [`Search::required`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(len: usize) -> Self {
        Bits(vec![0; len.div_ceil(64)])
    }

    fn contains(&self, i: usize) -> bool {
        self.0
            .get(i / 64)
            .is_some_and(|word| word >> (i % 64) & 1 == 1)
    }

    fn insert(&mut self, i: usize) {
        if let Some(word) = self.0.get_mut(i / 64) {
            *word |= 1 << (i % 64);
        }
    }

    fn len(&self) -> usize {
        self.0.iter().map(|word| word.count_ones() as usize).sum()
    }
}

#[derive(Debug)]
enum Verdict {
    Linearizable {
        states: u64,
    },
    Undecided {
        states: u64,
    },
    /// The search failed; `done`/`state` is the furthest it got.
    Violation {
        done: Bits,
        state: State,
    },
}

/// The WGL search over one name's sub-history.
#[derive(Debug)]
struct Search {
    /// Calls with a known outcome, by invocation: all must be linearized.
    required: Vec<Call>,
    /// Indices into `required`, by deadline.
    by_deadline: Vec<usize>,
    /// Unknown claims, by invocation: each may be linearized or not.
    optional: Vec<Call>,
}

impl Search {
    fn new(required: Vec<Call>, optional: Vec<Call>) -> Self {
        let mut by_deadline: Vec<usize> = (0..required.len()).collect();
        by_deadline.sort_by_key(|&i| required.get(i).map(|c| c.deadline));
        Search {
            required,
            by_deadline,
            optional,
        }
    }

    /// The earliest deadline among the calls not in `done`: a call may be
    /// linearized next only if it was invoked no later than this.
    fn deadline(&self, done: &Bits) -> u64 {
        self.by_deadline
            .iter()
            .find(|&&i| !done.contains(i))
            .and_then(|&i| self.required.get(i))
            .map_or(NO_DEADLINE, |c| c.deadline)
    }

    /// The required calls that may be linearized next, with their indices.
    fn candidates<'a>(&'a self, done: &'a Bits) -> impl Iterator<Item = (usize, &'a Call)> + 'a {
        let deadline = self.deadline(done);
        self.required
            .iter()
            .enumerate()
            .take_while(move |(_, c)| c.invoked <= deadline)
            .filter(move |(i, _)| !done.contains(*i))
    }

    /// Linearizes, until none is left, every call that may go next, matches
    /// the model and leaves `state` unchanged (see the module docs).
    fn close(&self, done: &mut Bits, state: State) {
        loop {
            let ready: Vec<usize> = self
                .candidates(done)
                .filter(|(_, c)| c.apply(state) == Some(state))
                .map(|(i, _)| i)
                .collect();
            if ready.is_empty() {
                return;
            }
            for i in ready {
                done.insert(i);
            }
        }
    }

    fn run(&self, max_states: u64) -> Verdict {
        let total = self.required.len();
        let mut stack = vec![(Bits::new(total), None)];
        // The key leaves out which unknown claims were linearized. That is
        // sound for this model because the state is monotone: an unknown
        // claim changes it only from free, and it is never free again, so
        // from any key either none was linearized (free) or none ever will
        // be (owned), and what follows depends on the key alone.
        let mut seen: HashSet<(Bits, State)> = HashSet::new();
        let mut states = 0u64;
        let mut furthest = (0, Bits::new(total), None);
        while let Some((mut done, state)) = stack.pop() {
            self.close(&mut done, state);
            if !seen.insert((done.clone(), state)) {
                continue;
            }
            states += 1;
            let count = done.len();
            if count == total {
                return Verdict::Linearizable { states };
            }
            if states > max_states {
                return Verdict::Undecided { states };
            }
            if states == 1 || count > furthest.0 {
                furthest = (count, done.clone(), state);
            }
            // Unknown claims are pushed first, so tried last; one per
            // resulting state is enough, as the key is the same.
            let deadline = self.deadline(&done);
            let mut tried: Vec<State> = Vec::new();
            for call in self.optional.iter().take_while(|c| c.invoked <= deadline) {
                if let Some(next) = call.apply(state)
                    && next != state
                    && !tried.contains(&next)
                {
                    tried.push(next);
                    stack.push((done.clone(), next));
                }
            }
            // Calls that matched without changing the state were taken by
            // `close`: what is left changes it or does not match.
            let first = stack.len();
            for (i, call) in self.candidates(&done) {
                if let Some(next) = call.apply(state) {
                    let mut child = done.clone();
                    child.insert(i);
                    stack.push((child, next));
                }
            }
            // Earliest invoked on top.
            if let Some(pushed) = stack.get_mut(first..) {
                pushed.reverse();
            }
        }
        let (_, done, state) = furthest;
        Verdict::Violation { done, state }
    }

    /// Explains a failed search from its furthest point.
    fn explain(&self, done: &Bits, state: State, events: &[&Event], owners: &Owners) -> String {
        let describe = |call: &Call| match events.get(call.event) {
            Some(event) => format!("#{} ({event})", call.event),
            None => format!("#{}", call.event),
        };
        let mut why = format!(
            "no linearization of the {} operations with a known outcome exists \
             (with {} unknown claims, each taking effect or not); at best {} of them \
             are linearized, leaving the name {}",
            self.required.len(),
            self.optional.len(),
            done.len(),
            owners.describe(state),
        );
        if let Some(call) = self
            .by_deadline
            .iter()
            .find(|&&i| !done.contains(i))
            .and_then(|&i| self.required.get(i))
        {
            why.push_str(&format!(
                "; {} must take effect before anything invoked later",
                describe(call)
            ));
        }
        why.push_str(", and of the operations that could come next:");
        for (_, call) in self.candidates(done) {
            let (next, answer) = model(state, call.kind);
            let verdict = match call.apply(state) {
                Some(_) => format!(
                    "could take effect (leaving the name {}) but nothing can follow",
                    owners.describe(next)
                ),
                None => format!(
                    "cannot, the registry would answer {}",
                    describe_answer(answer, owners)
                ),
            };
            why.push_str(&format!("\n  {}: {verdict}", describe(call)));
        }
        why
    }
}

fn describe_answer(answer: Answer, owners: &Owners) -> String {
    let owner = |id: OwnerId| owners.names.get(id).map_or("?", String::as_str).to_owned();
    match answer {
        Answer::Granted => "granted".to_owned(),
        Answer::Taken(holder) => format!("taken by {:?}", owner(holder)),
        Answer::Read(None) => "free".to_owned(),
        Answer::Read(Some(holder)) => format!("owner {:?}", owner(holder)),
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Claim { owner } => write!(f, "claim by {owner:?}"),
            Op::Read => f.write_str("read"),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Granted => f.write_str("granted"),
            Outcome::Taken { owner } => write!(f, "taken by {owner:?}"),
            Outcome::Read(None) => f.write_str("free"),
            Outcome::Read(Some(owner)) => write!(f, "owner {owner:?}"),
            Outcome::Unknown => f.write_str("unknown"),
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "process {}: {} {} -> {}, invoked {}, returned ",
            self.process, self.name, self.op, self.outcome, self.invoked
        )?;
        match self.returned {
            Some(returned) => write!(f, "{returned}"),
            None => f.write_str("never"),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "name {:?} is not linearizable: {}", self.name, self.why)?;
        f.write_str("\nits history:")?;
        for (i, event) in self.events.iter().enumerate() {
            write!(f, "\n  #{i} {event}")?;
        }
        Ok(())
    }
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckError::Violation(violation) => violation.fmt(f),
            CheckError::Undecided { name, states } => write!(
                f,
                "search limit reached for name {name:?} after {states} states: linearizability undecided"
            ),
            CheckError::Malformed { name, index, why } => {
                write!(
                    f,
                    "malformed event #{index} of the history (name {name:?}): {why}"
                )
            }
        }
    }
}

impl std::error::Error for CheckError {}

#[cfg(test)]
mod tests {
    use super::*;

    const N: &str = "ann";

    fn claim(
        process: u64,
        owner: &str,
        invoked: u64,
        returned: Option<u64>,
        outcome: Outcome,
    ) -> Event {
        claim_on(N, process, owner, invoked, returned, outcome)
    }

    fn claim_on(
        name: &str,
        process: u64,
        owner: &str,
        invoked: u64,
        returned: Option<u64>,
        outcome: Outcome,
    ) -> Event {
        Event {
            process,
            name: name.to_owned(),
            op: Op::Claim {
                owner: owner.to_owned(),
            },
            invoked,
            returned,
            outcome,
        }
    }

    fn read(process: u64, invoked: u64, returned: u64, owner: Option<&str>) -> Event {
        read_on(
            N,
            process,
            invoked,
            Some(returned),
            Outcome::Read(owner.map(str::to_owned)),
        )
    }

    fn read_on(
        name: &str,
        process: u64,
        invoked: u64,
        returned: Option<u64>,
        outcome: Outcome,
    ) -> Event {
        Event {
            process,
            name: name.to_owned(),
            op: Op::Read,
            invoked,
            returned,
            outcome,
        }
    }

    fn taken(owner: &str) -> Outcome {
        Outcome::Taken {
            owner: owner.to_owned(),
        }
    }

    use Outcome::{Granted, Unknown};

    fn assert_linearizable(history: &[Event]) -> Report {
        match check(history) {
            Ok(report) => report,
            Err(error) => panic!("expected linearizable, got: {error}"),
        }
    }

    fn assert_violation(history: &[Event]) -> Violation {
        match check(history) {
            Err(CheckError::Violation(violation)) => violation,
            other => panic!("expected a violation, got {other:?} for {history:#?}"),
        }
    }

    #[test]
    fn sequential_legal_history_passes() {
        let history = [
            read(1, 0, 1, None),
            claim(1, "alice", 2, Some(3), Granted),
            read(2, 4, 5, Some("alice")),
            claim(2, "bob", 6, Some(7), taken("alice")),
            read(3, 8, 9, Some("alice")),
        ];
        let report = assert_linearizable(&history);
        assert_eq!(report.names, 1);
        assert_eq!(report.operations, 5);
        assert_eq!(report.unknown, 0);
    }

    #[test]
    fn concurrent_claims_both_granted_is_violation() {
        let history = [
            claim(1, "alice", 0, Some(10), Granted),
            claim(2, "bob", 5, Some(15), Granted),
        ];
        let violation = assert_violation(&history);
        assert_eq!(violation.name, N);
        assert_eq!(violation.events, history);
        assert!(violation.why.contains("taken by"), "{}", violation.why);
    }

    #[test]
    fn concurrent_claims_one_granted_one_taken_passes() {
        assert_linearizable(&[
            claim(1, "alice", 0, Some(10), Granted),
            claim(2, "bob", 5, Some(15), taken("alice")),
        ]);
        // The refused claim may even return first, as long as they overlap.
        assert_linearizable(&[
            claim(2, "bob", 0, Some(3), taken("alice")),
            claim(1, "alice", 1, Some(10), Granted),
        ]);
    }

    #[test]
    fn read_of_owner_before_claim_invoked_is_violation() {
        assert_violation(&[
            read(1, 0, 5, Some("alice")),
            claim(2, "alice", 10, Some(20), Granted),
        ]);
        // Even if the claim's outcome is unknown: it cannot act before it
        // is invoked.
        assert_violation(&[
            read(1, 0, 5, Some("alice")),
            claim(2, "alice", 10, None, Unknown),
        ]);
    }

    #[test]
    fn stale_read_after_granted_claim_is_violation() {
        assert_violation(&[claim(1, "alice", 0, Some(5), Granted), read(2, 6, 8, None)]);
        // Contrast: a read overlapping the claim may see the name free.
        assert_linearizable(&[claim(1, "alice", 0, Some(5), Granted), read(2, 4, 8, None)]);
    }

    #[test]
    fn unknown_claim_that_took_effect_passes() {
        let history = [
            claim(1, "alice", 0, None, Unknown),
            read(2, 1, 2, None),
            read(2, 3, 4, Some("alice")),
            claim(3, "bob", 5, Some(6), taken("alice")),
        ];
        let report = assert_linearizable(&history);
        assert_eq!(report.unknown, 1);
    }

    #[test]
    fn unknown_claim_may_take_effect_after_its_timeout() {
        assert_linearizable(&[
            claim(1, "alice", 0, Some(5), Unknown),
            read(2, 10, 12, None),
            read(2, 20, 22, Some("alice")),
        ]);
    }

    #[test]
    fn unknown_claim_that_never_took_effect_passes() {
        assert_linearizable(&[
            claim(1, "alice", 0, Some(3), Unknown),
            read(2, 5, 6, None),
            claim(2, "bob", 7, Some(8), Granted),
            read(3, 9, 10, Some("bob")),
        ]);
        // Alone, too.
        assert_linearizable(&[claim(1, "alice", 0, None, Unknown)]);
    }

    #[test]
    fn taken_by_owner_who_never_claimed_is_violation() {
        assert_violation(&[claim(1, "alice", 0, Some(5), taken("mallory"))]);
        assert_violation(&[
            claim(1, "alice", 0, Some(1), Granted),
            claim(2, "bob", 2, Some(3), taken("mallory")),
        ]);
        // Nor may a claimant be refused in favour of itself.
        assert_violation(&[claim(1, "alice", 0, Some(5), taken("alice"))]);
    }

    #[test]
    fn concurrent_reads_see_old_and_new_in_either_order_pass() {
        // Both reads overlap each other and the claim.
        assert_linearizable(&[
            claim(1, "alice", 0, Some(100), Granted),
            read(2, 10, 50, None),
            read(3, 20, 60, Some("alice")),
        ]);
        assert_linearizable(&[
            claim(1, "alice", 0, Some(100), Granted),
            read(2, 10, 50, Some("alice")),
            read(3, 20, 60, None),
        ]);
    }

    #[test]
    fn read_old_after_read_new_is_violation() {
        let violation = assert_violation(&[
            claim(1, "alice", 0, Some(100), Granted),
            read(2, 10, 20, Some("alice")),
            read(3, 30, 40, None),
        ]);
        assert!(violation.why.contains("#2"), "{}", violation.why);
        // Reversed, the reads are fine.
        assert_linearizable(&[
            claim(1, "alice", 0, Some(100), Granted),
            read(2, 10, 20, None),
            read(3, 30, 40, Some("alice")),
        ]);
    }

    #[test]
    fn idempotent_reclaim_by_holder_passes() {
        assert_linearizable(&[
            claim(1, "alice", 0, Some(1), Granted),
            claim(2, "alice", 2, Some(3), Granted),
            claim(3, "alice", 10, Some(20), Granted),
            claim(4, "alice", 15, Some(25), Granted),
            read(5, 30, 31, Some("alice")),
        ]);
        // Two concurrent claims by the same owner on a free name.
        assert_linearizable(&[
            claim(1, "alice", 0, Some(10), Granted),
            claim(2, "alice", 1, Some(9), Granted),
        ]);
    }

    #[test]
    fn granted_claim_without_response_time_has_no_deadline() {
        assert_linearizable(&[
            claim(1, "alice", 0, None, Granted),
            read(2, 10, 11, None),
            read(2, 20, 21, Some("alice")),
        ]);
        // But it must take effect at some point.
        assert_violation(&[
            claim(1, "alice", 0, None, Granted),
            claim(2, "bob", 10, Some(11), Granted),
        ]);
    }

    #[test]
    fn unknown_and_failed_reads_are_ignored() {
        let report = assert_linearizable(&[
            claim(1, "alice", 0, Some(1), Granted),
            read_on(N, 2, 2, None, Unknown),
            read_on(N, 2, 3, Some(4), Unknown),
            read(3, 5, 6, Some("alice")),
        ]);
        assert_eq!(report.unknown, 2);
        assert_eq!(report.operations, 4);
    }

    #[test]
    fn malformed_events_are_rejected() {
        let backwards = [
            claim(1, "alice", 0, Some(5), Granted),
            claim(2, "bob", 10, Some(5), Granted),
        ];
        assert!(matches!(
            check(&backwards),
            Err(CheckError::Malformed { index: 1, .. })
        ));
        let read_granted = read_on(N, 1, 0, Some(1), Granted);
        assert!(matches!(
            check(&[read_granted]),
            Err(CheckError::Malformed { .. })
        ));
        let claim_read = claim(1, "alice", 0, Some(1), Outcome::Read(None));
        assert!(matches!(
            check(&[claim_read]),
            Err(CheckError::Malformed { .. })
        ));
    }

    #[test]
    fn search_limit_reports_undecided() {
        let history = [
            claim(1, "alice", 0, Some(10), Granted),
            claim(2, "bob", 5, Some(15), Granted),
        ];
        match check_with_limit(&history, 1) {
            Err(CheckError::Undecided { name, states }) => {
                assert_eq!(name, N);
                assert_eq!(states, 2);
            }
            other => panic!("expected undecided, got {other:?}"),
        }
        // With room, it is decided.
        assert!(matches!(
            check_with_limit(&history, 100),
            Err(CheckError::Violation(_))
        ));
    }

    #[test]
    fn empty_history_passes() {
        assert_eq!(check(&[]), Ok(Report::default()));
    }

    #[test]
    fn mixed_names_checked_separately_with_counts() {
        let mut history = vec![
            claim_on("a", 1, "alice", 0, Some(10), Granted),
            claim_on("b", 2, "bob", 0, Some(10), Granted),
            claim_on("c", 3, "carol", 0, None, Unknown),
            // Would be a violation if "a" and "b" were one object.
            read_on("a", 4, 20, Some(21), Outcome::Read(Some("alice".into()))),
            read_on("b", 4, 22, Some(23), Outcome::Read(Some("bob".into()))),
            read_on("c", 5, 24, None, Unknown),
            claim_on("c", 6, "dave", 30, Some(31), taken("carol")),
            claim_on("a", 7, "bob", 30, Some(31), taken("alice")),
        ];
        let report = assert_linearizable(&history);
        assert_eq!(report.names, 3);
        assert_eq!(report.operations, 8);
        assert_eq!(report.unknown, 2);
        assert!(report.states_explored >= 3, "{report:?}");

        // One bad name is reported with its own events only.
        history.push(read_on("b", 8, 40, Some(41), Outcome::Read(None)));
        let violation = assert_violation(&history);
        assert_eq!(violation.name, "b");
        assert_eq!(violation.events.len(), 3);
        assert!(violation.events.iter().all(|e| e.name == "b"));
    }

    /// xorshift64: a seeded generator with no dependencies.
    struct Rng(u64);

    impl Rng {
        fn new(seed: u64) -> Self {
            Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }

        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }

        fn index(&mut self, len: usize) -> usize {
            self.below(len as u64) as usize
        }

        fn chance(&mut self, num: u64, den: u64) -> bool {
            self.below(den) < num
        }
    }

    struct Shape {
        names: usize,
        owners: usize,
        ops: usize,
        processes: u64,
        /// Operations last up to this long on either side of the moment
        /// they take effect.
        spread: u64,
    }

    /// A linearizable history by construction: operations run one at a time
    /// on a real sequential registry, at increasing moments, and each gets
    /// an interval around its moment. Unknown claims take effect or not.
    fn linearizable_history(rng: &mut Rng, shape: &Shape) -> Vec<Event> {
        let names: Vec<String> = (0..shape.names).map(|i| format!("name-{i}")).collect();
        let owners: Vec<String> = (0..shape.owners).map(|i| format!("owner-{i}")).collect();
        let mut registry: HashMap<String, Option<String>> = HashMap::new();
        let mut history = Vec::new();
        let mut moment = shape.spread;
        for _ in 0..shape.ops {
            moment += 1 + rng.below(shape.spread / 3 + 1);
            let invoked = moment - rng.below(shape.spread + 1);
            let returned = moment + rng.below(shape.spread + 1);
            let name = names[rng.index(names.len())].clone();
            let process = rng.below(shape.processes);
            let holder = registry.entry(name.clone()).or_default();
            let (op, returned, outcome) = if rng.chance(1, 2) {
                let owner = owners[rng.index(owners.len())].clone();
                let outcome = if rng.chance(1, 5) {
                    if rng.chance(1, 2) && holder.is_none() {
                        *holder = Some(owner.clone());
                    }
                    Unknown
                } else {
                    match holder {
                        None => {
                            *holder = Some(owner.clone());
                            Granted
                        }
                        Some(h) if *h == owner => Granted,
                        Some(h) => taken(h),
                    }
                };
                let returned = match (&outcome, rng.below(3)) {
                    // The client gave up, maybe before the claim took effect.
                    (Unknown, 0) => Some(invoked + rng.below(returned - invoked + 1)),
                    (Unknown, 1) => None,
                    _ => Some(returned),
                };
                (Op::Claim { owner }, returned, outcome)
            } else if rng.chance(1, 8) {
                (Op::Read, rng.chance(1, 2).then_some(returned), Unknown)
            } else {
                (Op::Read, Some(returned), Outcome::Read(holder.clone()))
            };
            history.push(Event {
                process,
                name,
                op,
                invoked,
                returned,
                outcome,
            });
        }
        // The order of the record is irrelevant.
        for i in (1..history.len()).rev() {
            let j = rng.index(i + 1);
            history.swap(i, j);
        }
        history
    }

    fn random_shape(rng: &mut Rng) -> Shape {
        Shape {
            names: 1 + rng.index(3),
            owners: 1 + rng.index(5),
            ops: 1 + rng.index(200),
            processes: 1 + rng.below(12),
            spread: rng.below(60),
        }
    }

    #[test]
    fn random_linearizable_histories_pass() {
        let mut rng = Rng::new(1);
        let mut unknown = 0;
        for seed in 0..400 {
            let shape = random_shape(&mut rng);
            let history = linearizable_history(&mut rng, &shape);
            match check(&history) {
                Ok(report) => unknown += report.unknown,
                Err(error) => panic!("history {seed} rejected: {error}"),
            }
        }
        assert!(unknown > 1000, "few unknown outcomes: {unknown}");
        // A long, very concurrent history on one name.
        let shape = Shape {
            names: 1,
            owners: 4,
            ops: 400,
            processes: 12,
            spread: 60,
        };
        for _ in 0..10 {
            let history = linearizable_history(&mut rng, &shape);
            if let Err(error) = check(&history) {
                panic!("long history rejected: {error}");
            }
        }
    }

    /// The owner an answer (other than event `except`'s) pins the name to.
    fn pinned_holder(history: &[Event], name: &str, except: usize) -> Option<(usize, String)> {
        history.iter().enumerate().find_map(|(i, e)| {
            if i == except || e.name != name {
                return None;
            }
            match (&e.op, &e.outcome) {
                (Op::Claim { owner }, Granted) => Some((i, owner.clone())),
                (_, Outcome::Taken { owner }) | (_, Outcome::Read(Some(owner))) => {
                    Some((i, owner.clone()))
                }
                _ => None,
            }
        })
    }

    /// Changes one outcome of `history` to one that no linearization can
    /// give, of the given kind; returns the name mutated.
    fn mutate(history: &mut [Event], kind: usize, rng: &mut Rng) -> Option<String> {
        let start = rng.index(history.len());
        let order: Vec<usize> = (0..history.len())
            .map(|k| (start + k) % history.len())
            .collect();
        for i in order {
            let event = &history[i];
            let name = event.name.clone();
            let mutated = match (kind, &event.op) {
                // A second owner granted: the holder is pinned elsewhere.
                (0, Op::Claim { owner }) => match pinned_holder(history, &name, i) {
                    Some((_, holder)) if holder != *owner => Some(Granted),
                    _ => None,
                },
                // A read of, or refusal by, an owner that never claimed.
                (1, Op::Read) => Some(Outcome::Read(Some("ghost".into()))),
                (2, Op::Claim { .. }) => Some(taken("ghost")),
                // A stale read: free after a claim was granted.
                (3, Op::Read) => history
                    .iter()
                    .any(|c| {
                        c.name == name
                            && c.outcome == Granted
                            && c.returned.is_some_and(|r| r < event.invoked)
                    })
                    .then_some(Outcome::Read(None)),
                _ => None,
            };
            if let Some(outcome) = mutated {
                history[i].outcome = outcome;
                if history[i].returned.is_none() && kind == 3 {
                    history[i].returned = Some(history[i].invoked);
                }
                return Some(name);
            }
        }
        None
    }

    #[test]
    fn random_mutated_histories_fail() {
        let mut rng = Rng::new(2);
        let mut mutated = [0; 4];
        for seed in 0..800 {
            let shape = random_shape(&mut rng);
            let mut history = linearizable_history(&mut rng, &shape);
            let kind = seed % 4;
            let Some(name) = mutate(&mut history, kind, &mut rng) else {
                continue;
            };
            mutated[kind] += 1;
            match check(&history) {
                Err(CheckError::Violation(violation)) => assert_eq!(violation.name, name),
                other => panic!("mutation {kind} of history {seed} not rejected: {other:?}"),
            }
        }
        assert!(
            mutated.iter().all(|&n| n >= 50),
            "too few mutations: {mutated:?}"
        );
    }

    /// An independent oracle: tries every order of every subset of calls.
    fn brute_force(history: &[Event]) -> bool {
        fn search(calls: &[&Event], done: &mut [bool], state: Option<String>) -> bool {
            let pending_required =
                |done: &[bool], j: usize| !done[j] && calls[j].outcome != Unknown;
            if (0..calls.len()).all(|j| !pending_required(done, j)) {
                return true;
            }
            for i in 0..calls.len() {
                if done[i] {
                    continue;
                }
                let blocked = (0..calls.len()).any(|j| {
                    j != i
                        && pending_required(done, j)
                        && calls[j].returned.is_some_and(|r| r < calls[i].invoked)
                });
                if blocked {
                    continue;
                }
                let (next, answer) = match (&calls[i].op, &state) {
                    (Op::Claim { owner }, None) => (Some(owner.clone()), Granted),
                    (Op::Claim { owner }, Some(h)) if h == owner => (state.clone(), Granted),
                    (Op::Claim { .. }, Some(h)) => (state.clone(), taken(h)),
                    (Op::Read, _) => (state.clone(), Outcome::Read(state.clone())),
                };
                if calls[i].outcome != Unknown && calls[i].outcome != answer {
                    continue;
                }
                done[i] = true;
                if search(calls, done, next) {
                    return true;
                }
                done[i] = false;
            }
            false
        }
        let names: HashSet<&str> = history.iter().map(|e| e.name.as_str()).collect();
        names.into_iter().all(|name| {
            let calls: Vec<&Event> = history
                .iter()
                .filter(|e| e.name == name && !(e.op == Op::Read && e.outcome == Unknown))
                .collect();
            search(&calls, &mut vec![false; calls.len()], None)
        })
    }

    /// A small history with arbitrary (mostly wrong) outcomes.
    fn arbitrary_history(rng: &mut Rng) -> Vec<Event> {
        let owners = ["a", "b"];
        (0..1 + rng.index(6))
            .map(|_| {
                let invoked = rng.below(20);
                let returned = (!rng.chance(1, 8)).then(|| invoked + rng.below(10));
                let answered = ["a", "b", "c"][rng.index(3)].to_owned();
                let (op, outcome) = if rng.chance(1, 2) {
                    let owner = owners[rng.index(2)].to_owned();
                    let outcome = match rng.below(3) {
                        0 => Granted,
                        1 => taken(&answered),
                        _ => Unknown,
                    };
                    (Op::Claim { owner }, outcome)
                } else {
                    let outcome = match rng.below(4) {
                        0 => Outcome::Read(None),
                        1 => Unknown,
                        _ => Outcome::Read(Some(answered)),
                    };
                    (Op::Read, outcome)
                };
                Event {
                    process: rng.below(3),
                    name: N.to_owned(),
                    op,
                    invoked,
                    returned,
                    outcome,
                }
            })
            .collect()
    }

    #[test]
    fn agrees_with_brute_force_on_small_histories() {
        let mut rng = Rng::new(3);
        let mut verdicts = [0; 2];
        for case in 0..6000 {
            let history = if case % 2 == 0 {
                arbitrary_history(&mut rng)
            } else {
                let shape = Shape {
                    names: 1,
                    owners: 1 + rng.index(3),
                    ops: 1 + rng.index(7),
                    processes: 3,
                    spread: rng.below(20),
                };
                let mut history = linearizable_history(&mut rng, &shape);
                // Sometimes break it.
                if rng.chance(1, 2) {
                    let i = rng.index(history.len());
                    history[i].outcome = match &history[i].op {
                        Op::Claim { .. } => {
                            [Granted, taken("owner-0"), taken("owner-1")][rng.index(3)].clone()
                        }
                        Op::Read => {
                            Outcome::Read([None, Some("owner-0".into())][rng.index(2)].clone())
                        }
                    };
                }
                history
            };
            let expected = brute_force(&history);
            let got = match check(&history) {
                Ok(_) => true,
                Err(CheckError::Violation(_)) => false,
                Err(other) => panic!("case {case}: {other}"),
            };
            assert_eq!(got, expected, "case {case}: {history:#?}");
            verdicts[usize::from(got)] += 1;
        }
        assert!(
            verdicts.iter().all(|&n| n >= 1000),
            "lopsided verdicts: {verdicts:?}"
        );
    }
}
