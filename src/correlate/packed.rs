//! Core Events about workloads kept while the engine holds its initial lists, packed one after
//! another in a single buffer.
//!
//! Fed by `Engine::apply` while held ([`super::Engine::hold`]); drained by the release, after
//! the promotions the initial state shows in flight are open and history is forgotten, so that
//! each Event is then buffered only if it can still land on a span (`EventStore`). A cluster's
//! Events are most of what its initial lists hold, and most of them are about Pods no promotion
//! will follow: held as buffered events they cost a few hundred bytes and several allocations
//! each until the release; packed, their bytes only, in one allocation returned whole.

use std::marker::PhantomData;

use jiff::{SignedDuration, Timestamp};

use super::events::identity_hash;
use crate::model::{
    CondStatus, Condition, DeploymentObs, Kind, KubeEventObs, Marks, ObjectRef, ProbeSpec,
};

/// What can be packed: written field by field, read back in the same order.
pub(super) trait Pack {
    /// What reading it back gives.
    type Out;
    fn pack(&self, w: &mut Vec<u8>);
    /// `None` when the bytes end early (never for what [`Pack::pack`] wrote).
    fn unpack(r: &mut Reader<'_>) -> Option<Self::Out>;
}

/// Packed values, each with the time it was observed, in the order they came.
pub(super) struct Packed<T> {
    buf: Vec<u8>,
    len: usize,
    of: PhantomData<T>,
}

impl<T> Default for Packed<T> {
    fn default() -> Self {
        Packed {
            buf: Vec::new(),
            len: 0,
            of: PhantomData,
        }
    }
}

impl<T: Pack> Packed<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn push(&mut self, at: Timestamp, v: &T) {
        put_time(&mut self.buf, Some(at));
        v.pack(&mut self.buf);
        self.len += 1;
    }

    /// Every value packed, in the order they came; the buffer is freed whole once read.
    pub fn take(&mut self) -> impl Iterator<Item = (Timestamp, T::Out)> + use<T> {
        let buf = std::mem::take(&mut self.buf);
        self.len = 0;
        let mut at = 0;
        std::iter::from_fn(move || {
            let mut r = Reader { buf: &buf, at };
            let at_v = r.time()?.unwrap_or(Timestamp::UNIX_EPOCH);
            let v = T::unpack(&mut r)?;
            at = r.at;
            Some((at_v, v))
        })
    }
}

/// Core Events about workloads, until the release.
pub(super) type PackedEvents = Packed<KubeEventObs>;

/// Kubernetes times are mostly whole seconds: the nanoseconds only when there are some.
fn put_time(b: &mut Vec<u8>, t: Option<Timestamp>) {
    match t {
        None => b.push(0),
        Some(t) if t.subsec_nanosecond() == 0 => {
            b.push(1);
            b.extend_from_slice(&t.as_second().to_le_bytes());
        }
        Some(t) => {
            b.push(2);
            b.extend_from_slice(&t.as_second().to_le_bytes());
            b.extend_from_slice(&t.subsec_nanosecond().to_le_bytes());
        }
    }
}

/// A length, seven bits a byte (LEB128): one byte for most.
fn put_len(b: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        b.push((n as u8) | 0x80);
        n >>= 7;
    }
    b.push(n as u8);
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    put_len(b, s.len());
    b.extend_from_slice(s.as_bytes());
}

fn put_opt_str(b: &mut Vec<u8>, s: Option<&str>) {
    b.push(u8::from(s.is_some()));
    if let Some(s) = s {
        put_str(b, s);
    }
}

fn put_i64(b: &mut Vec<u8>, v: i64) {
    b.extend_from_slice(&v.to_le_bytes());
}

/// Reads back what was packed.
pub(super) struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn bytes<const N: usize>(&mut self) -> Option<[u8; N]> {
        let b = self.buf.get(self.at..self.at + N)?.try_into().ok()?;
        self.at += N;
        Some(b)
    }

    fn flag(&mut self) -> Option<bool> {
        self.bytes::<1>().map(|[b]| b != 0)
    }

    fn i64(&mut self) -> Option<i64> {
        self.bytes().map(i64::from_le_bytes)
    }

    fn len(&mut self) -> Option<usize> {
        let mut n = 0usize;
        for shift in (0..usize::BITS).step_by(7) {
            let [byte] = self.bytes::<1>()?;
            n |= usize::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Some(n);
            }
        }
        None
    }

    fn time(&mut self) -> Option<Option<Timestamp>> {
        let [tag] = self.bytes::<1>()?;
        if tag == 0 {
            return Some(None);
        }
        let secs = i64::from_le_bytes(self.bytes()?);
        let nanos = if tag == 2 {
            i32::from_le_bytes(self.bytes()?)
        } else {
            0
        };
        Some(Timestamp::new(secs, nanos).ok())
    }

    fn string(&mut self) -> Option<String> {
        let len = self.len()?;
        let s = self.buf.get(self.at..self.at.checked_add(len)?)?;
        self.at += len;
        Some(String::from_utf8_lossy(s).into_owned())
    }

    fn opt_string(&mut self) -> Option<Option<String>> {
        if self.flag()? {
            self.string().map(Some)
        } else {
            Some(None)
        }
    }
}

/// A core Event read back: its series (the hash of its uid the event buffer keys repeats by),
/// and the Event without its uid.
impl Pack for KubeEventObs {
    type Out = (u64, KubeEventObs);

    fn pack(&self, b: &mut Vec<u8>) {
        b.extend_from_slice(&identity_hash(&[&self.uid]).to_le_bytes());
        put_time(b, self.time);
        put_time(b, self.first_time);
        put_i64(b, self.count);
        b.push(u8::from(self.warning));
        for s in [
            &self.involved_kind,
            &self.involved_namespace,
            &self.involved_name,
            &self.reason,
            &self.message,
            &self.component,
        ] {
            put_str(b, s);
        }
        put_opt_str(b, self.revision.as_deref());
        put_opt_str(b, self.promotion_id.as_deref());
    }

    fn unpack(r: &mut Reader<'_>) -> Option<Self::Out> {
        let series = u64::from_le_bytes(r.bytes()?);
        let time = r.time()?;
        let first_time = r.time()?;
        let count = r.i64()?;
        let warning = r.flag()?;
        let involved_kind = r.string()?;
        let (involved_namespace, involved_name) = (r.string()?, r.string()?);
        let (reason, message, component) = (r.string()?, r.string()?, r.string()?);
        let ev = KubeEventObs {
            uid: String::new(),
            involved_kind,
            involved_namespace,
            involved_name,
            reason,
            message,
            warning,
            time,
            first_time,
            count,
            component,
            revision: r.opt_string()?,
            promotion_id: r.opt_string()?,
        };
        Some((series, ev))
    }
}

impl Pack for ObjectRef {
    type Out = Self;

    fn pack(&self, b: &mut Vec<u8>) {
        put_str(b, self.kind.as_str());
        put_str(b, &self.namespace);
        put_str(b, &self.name);
    }

    fn unpack(r: &mut Reader<'_>) -> Option<Self::Out> {
        let kind = Kind::parse(&r.string()?)?;
        Some(ObjectRef::new(kind, r.string()?, r.string()?))
    }
}

impl<T: Pack<Out = T>> Pack for Option<T> {
    type Out = Self;

    fn pack(&self, b: &mut Vec<u8>) {
        b.push(u8::from(self.is_some()));
        if let Some(v) = self {
            v.pack(b);
        }
    }

    fn unpack(r: &mut Reader<'_>) -> Option<Self::Out> {
        if r.flag()? {
            T::unpack(r).map(Some)
        } else {
            Some(None)
        }
    }
}

impl Pack for ProbeSpec {
    type Out = Self;

    fn pack(&self, b: &mut Vec<u8>) {
        put_str(b, &self.url);
        put_opt_str(b, self.expect.as_deref());
        put_opt_str(b, self.expected_version.as_deref());
    }

    fn unpack(r: &mut Reader<'_>) -> Option<Self::Out> {
        Some(ProbeSpec {
            url: r.string()?,
            expect: r.opt_string()?,
            expected_version: r.opt_string()?,
        })
    }
}

impl Pack for Condition {
    type Out = Self;

    fn pack(&self, b: &mut Vec<u8>) {
        put_str(b, &self.type_);
        b.push(match self.status {
            CondStatus::True => 0,
            CondStatus::False => 1,
            CondStatus::Unknown => 2,
        });
        put_str(b, &self.reason);
        put_str(b, &self.message);
        put_time(b, self.last_transition);
        put_time(b, self.last_update);
        b.push(u8::from(self.observed_generation.is_some()));
        put_i64(b, self.observed_generation.unwrap_or_default());
    }

    fn unpack(r: &mut Reader<'_>) -> Option<Self::Out> {
        let type_ = r.string()?;
        let status = match r.bytes::<1>()? {
            [0] => CondStatus::True,
            [1] => CondStatus::False,
            _ => CondStatus::Unknown,
        };
        let (reason, message) = (r.string()?, r.string()?);
        let (last_transition, last_update) = (r.time()?, r.time()?);
        let has_generation = r.flag()?;
        let generation = r.i64()?;
        Some(Condition {
            type_,
            status,
            reason,
            message,
            last_transition,
            last_update,
            observed_generation: has_generation.then_some(generation),
        })
    }
}

impl Pack for DeploymentObs {
    type Out = Self;

    fn pack(&self, b: &mut Vec<u8>) {
        self.object.pack(b);
        put_str(b, &self.uid);
        put_opt_str(b, self.marks.promotion_id.as_deref());
        put_opt_str(b, self.marks.traceparent.as_deref());
        for v in [
            self.generation,
            self.observed_generation,
            self.replicas,
            self.updated,
            self.ready,
            self.available,
            self.unavailable,
        ] {
            put_i64(b, v);
        }
        put_i64(b, self.progress_deadline.as_secs());
        b.extend_from_slice(&self.progress_deadline.subsec_nanos().to_le_bytes());
        self.manager.pack(b);
        self.probe.pack(b);
        put_len(b, self.images.len());
        for i in &self.images {
            put_str(b, i);
        }
        b.extend_from_slice(&self.template.to_le_bytes());
        put_len(b, self.conditions.len());
        for c in &self.conditions {
            c.pack(b);
        }
        b.push(u8::from(self.paused));
    }

    fn unpack(r: &mut Reader<'_>) -> Option<Self::Out> {
        let object = ObjectRef::unpack(r)?;
        let uid = r.string()?;
        let marks = Marks {
            promotion_id: r.opt_string()?,
            traceparent: r.opt_string()?,
        };
        let mut n = [0i64; 7];
        for v in &mut n {
            *v = r.i64()?;
        }
        let [generation, observed_generation, replicas, updated, ready, available, unavailable] = n;
        let secs = r.i64()?;
        let nanos = i32::from_le_bytes(r.bytes()?);
        let progress_deadline = SignedDuration::new(secs, nanos);
        let manager = Option::<ObjectRef>::unpack(r)?;
        let probe = Option::<ProbeSpec>::unpack(r)?;
        let images = (0..r.len()?)
            .map(|_| r.string())
            .collect::<Option<Vec<String>>>()?;
        let template = u64::from_le_bytes(r.bytes()?);
        let conditions = (0..r.len()?)
            .map(|_| Condition::unpack(r))
            .collect::<Option<Vec<Condition>>>()?;
        Some(DeploymentObs {
            object,
            uid,
            marks,
            generation,
            observed_generation,
            replicas,
            updated,
            ready,
            available,
            unavailable,
            progress_deadline,
            manager,
            probe,
            images,
            template,
            conditions,
            paused: r.flag()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(i: i64) -> KubeEventObs {
        KubeEventObs {
            uid: format!("uid-{i}"),
            involved_kind: "Pod".into(),
            involved_namespace: "team-a".into(),
            involved_name: format!("web-7d9f-{i}"),
            reason: "BackOff".into(),
            message: "Back-off pulling image \"ghcr.io/x/web:1.2\" ünïcode".into(),
            warning: i % 2 == 0,
            time: Timestamp::new(1_800_000_000 + i, 123_456_789).ok(),
            first_time: (i % 3 == 0).then(|| Timestamp::new(1_700_000_000, 0).expect("time")),
            count: i,
            component: if i % 4 == 0 {
                String::new()
            } else {
                "kubelet".into()
            },
            revision: (i % 5 == 0).then(|| "main@sha1:abc".to_string()),
            promotion_id: (i % 7 == 0).then(|| format!("p-{i}")),
        }
    }

    fn deployment(i: i64) -> DeploymentObs {
        let time = |s: i64| Timestamp::new(1_800_000_000 + s, 5).ok();
        DeploymentObs {
            object: ObjectRef::new(
                if i % 2 == 0 {
                    Kind::Deployment
                } else {
                    Kind::DaemonSet
                },
                "team-a",
                format!("web-{i}"),
            ),
            uid: format!("uid-{i}"),
            marks: Marks {
                promotion_id: (i % 3 == 0).then(|| format!("p-{i}")),
                traceparent: (i % 4 == 0).then(|| "00-abc-def-01".to_string()),
            },
            generation: i,
            observed_generation: i - 1,
            replicas: 3,
            updated: 2,
            ready: -1,
            available: i64::MAX,
            unavailable: i64::MIN,
            progress_deadline: SignedDuration::new(600 + i, 250),
            manager: (i % 2 == 1)
                .then(|| ObjectRef::new(Kind::HelmRelease, "flux-system", format!("app-{i}"))),
            probe: (i % 3 == 1).then(|| ProbeSpec {
                url: "http://web/version".into(),
                expect: (i % 2 == 0).then(|| "json:/version".to_string()),
                expected_version: None,
            }),
            images: (0..i % 3)
                .map(|n| format!("ghcr.io/x/c{n}:1.{i}"))
                .collect(),
            template: 0xdead_beef_u64.wrapping_mul(i as u64),
            conditions: (0..i % 3)
                .map(|n| Condition {
                    type_: ["Progressing", "Available"][n as usize % 2].into(),
                    status: [CondStatus::True, CondStatus::False, CondStatus::Unknown]
                        [(i + n) as usize % 3],
                    reason: "NewReplicaSetAvailable".into(),
                    message: format!("ReplicaSet \"web-{i}-7d9f\" has successfully progressed."),
                    last_transition: time(n),
                    last_update: (n == 0).then(|| time(i)).flatten(),
                    observed_generation: (n == 1).then_some(i),
                })
                .collect(),
            paused: i % 5 == 0,
        }
    }

    /// Packs `values`, each observed at its own time (some with nanoseconds, some without),
    /// and checks that they come back as `expected` says, in order, once.
    fn roundtrip<T: Pack>(values: Vec<T>, expected: impl Fn(T) -> T::Out)
    where
        T::Out: PartialEq + std::fmt::Debug,
    {
        let mut packed = Packed::<T>::default();
        let at =
            |i: usize| Timestamp::new(1_800_000_100 + i as i64, (i % 2) as i32 * 7).expect("time");
        for (i, v) in values.iter().enumerate() {
            packed.push(at(i), v);
        }
        assert_eq!(packed.len(), values.len());
        let back: Vec<(Timestamp, T::Out)> = packed.take().collect();
        let expected: Vec<(Timestamp, T::Out)> = values
            .into_iter()
            .enumerate()
            .map(|(i, v)| (at(i), expected(v)))
            .collect();
        assert_eq!(back, expected);
        assert_eq!(packed.len(), 0);
        assert_eq!(packed.take().count(), 0, "taken once");
    }

    #[test]
    fn packed_events_come_back_whole_and_in_order() {
        // The uid comes back as the series the event buffer keys repeats by.
        roundtrip((0..50).map(event).collect(), |mut e| {
            let series = identity_hash(&[&e.uid]);
            e.uid.clear();
            (series, e)
        });
    }

    #[test]
    fn long_texts_and_lengths_come_back_whole() {
        let mut e = event(1);
        e.message = "x".repeat(300_000);
        e.involved_name = "é".repeat(200);
        roundtrip(vec![e], |mut e| {
            let series = identity_hash(&[&e.uid]);
            e.uid.clear();
            (series, e)
        });
    }

    #[test]
    fn packed_deployments_come_back_whole_and_in_order() {
        roundtrip((0..50).map(deployment).collect(), |d| d);
    }
}
