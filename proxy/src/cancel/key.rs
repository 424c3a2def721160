//! The layout of the cancel keys Causeway hands out, and where a CancelRequest goes: with
//! peering (`[proxy] peer_id`), bits 23..30 of the process id name the instance that issued
//! it, and the lowest bit of the secret says whether the request may still be forwarded to
//! a peer (cleared on forwarding, so a cancel crosses at most one hop and never loops).
//! Pure logic, no I/O.

use rand::Rng;

/// Largest `[proxy] peer_id` (and `[[peers]] id`): the id takes 8 bits of the process id.
pub const MAX_PEER_ID: u8 = u8::MAX;

/// Where the peer id sits in a process id (bits 23..30; bit 31 stays clear: positive pids).
const PEER_SHIFT: u32 = 23;
/// The bits of a process id that are random when peering is on.
const LOCAL_MASK: i32 = (1 << PEER_SHIFT) - 1;
/// Set in every secret Causeway hands out; cleared in a cancel forwarded to a peer.
const FORWARDABLE: i32 = 1;

/// A fresh process id for a client of the instance `peer_id` (0: no peering, any positive
/// value).
pub(super) fn new_pid(peer_id: u8, rng: &mut impl Rng) -> i32 {
    if peer_id == 0 {
        return rng.random_range(1..i32::MAX);
    }
    (i32::from(peer_id) << PEER_SHIFT) | rng.random_range(0..=LOCAL_MASK)
}

/// A fresh secret (its forwardable bit set).
pub(super) fn new_secret(rng: &mut impl Rng) -> i32 {
    rng.random::<i32>() | FORWARDABLE
}

/// The instance a process id names (meaningful only where peering is on).
pub(super) fn peer_of(pid: i32) -> Option<u8> {
    let pid = u32::try_from(pid).ok()?;
    u8::try_from(pid >> PEER_SHIFT).ok()
}

/// The secret a received key stands for locally: a forwarded cancel arrives with the
/// forwardable bit cleared.
pub(super) fn local_secret(key: [u8; 4]) -> [u8; 4] {
    (i32::from_be_bytes(key) | FORWARDABLE).to_be_bytes()
}

/// What to do with a CancelRequest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    /// Look the key up among this instance's clients.
    Local,
    /// Send it on to the peer with this id, with this key (the forwardable bit cleared).
    Peer { id: u8, key: [u8; 4] },
    /// It names a peer but was already forwarded once: drop it (a misconfigured peer list
    /// would otherwise bounce it around).
    Exhausted,
}

/// Where a CancelRequest for `pid` with `key` goes, on the instance `own` (0: no peering)
/// that knows the peers `is_peer` says it knows.
pub(super) fn route(own: u8, pid: i32, key: [u8; 4], is_peer: impl Fn(u8) -> bool) -> Route {
    if own == 0 {
        return Route::Local;
    }
    let Some(id) = peer_of(pid).filter(|&id| id != own && is_peer(id)) else {
        return Route::Local;
    };
    let secret = i32::from_be_bytes(key);
    if secret & FORWARDABLE == 0 {
        return Route::Exhausted;
    }
    Route::Peer {
        id,
        key: (secret & !FORWARDABLE).to_be_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_name_their_instance_and_stay_positive() {
        let mut rng = rand::rng();
        for id in [1, 2, 77, MAX_PEER_ID] {
            for _ in 0..1000 {
                let pid = new_pid(id, &mut rng);
                assert!(pid > 0, "{pid}");
                assert_eq!(peer_of(pid), Some(id));
            }
        }
        for _ in 0..1000 {
            assert!(new_pid(0, &mut rng) > 0);
        }
        assert_eq!(peer_of(-5), None);
    }

    #[test]
    fn a_cancel_for_a_peer_is_forwarded_once() {
        let mut rng = rand::rng();
        let pid = new_pid(2, &mut rng);
        let secret = new_secret(&mut rng).to_be_bytes();
        let known = |id: u8| id == 1 || id == 2;
        let Route::Peer { id, key } = route(1, pid, secret, known) else {
            panic!("expected a forward");
        };
        assert_eq!(id, 2);
        assert_ne!(key, secret);
        assert_eq!(local_secret(key), secret, "the peer recognises the key");
        // The peer itself handles it locally.
        assert_eq!(route(2, pid, key, known), Route::Local);
        // A misconfigured third instance that thinks it must forward it again does not.
        assert_eq!(route(3, pid, key, known), Route::Exhausted);
    }

    #[test]
    fn without_peering_or_for_an_unknown_peer_the_cancel_is_local() {
        let mut rng = rand::rng();
        let pid = new_pid(9, &mut rng);
        let secret = new_secret(&mut rng).to_be_bytes();
        assert_eq!(route(0, pid, secret, |_| true), Route::Local);
        assert_eq!(route(1, pid, secret, |id| id == 2), Route::Local);
        assert_eq!(route(9, pid, secret, |_| true), Route::Local);
    }
}
