//! Floors across a promotion (DESIGN.md §1 rule 5), pure: a floor recorded on an older
//! timeline is comparable on the new one only if the new timeline's history contains it
//! (its LSN is not beyond where the monitor first saw the new primary); otherwise that
//! write was lost in the failover, and the read goes to the primary until the session's
//! next write (or primary read) replaces the floor.

use super::Floor;
use crate::lsn::Position;

/// What becomes of a floor on the newest timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rebased {
    /// The floor as it stands, or moved onto the newest timeline.
    Floor(Floor),
    /// The floor's position is not in the new timeline's history: only the primary may
    /// serve the read (`causeway_consistency_fallbacks_total{reason="timeline_change"}`).
    Lost,
}

/// `floor` against the newest timeline a primary was elected on (`newest`, 0 if none yet)
/// and the first position seen on it after a promotion (`switched`; `None` when no
/// promotion was seen, e.g. a floor from another instance made before this one started).
pub fn rebase(floor: Floor, newest: u32, switched: Option<Position>) -> Rebased {
    let Floor::At(position) = floor else {
        return Rebased::Floor(floor);
    };
    if position.timeline >= newest {
        return Rebased::Floor(floor);
    }
    match switched {
        Some(start) if start.timeline == newest && position.lsn <= start.lsn => {
            Rebased::Floor(Floor::At(Position {
                timeline: newest,
                lsn: position.lsn,
            }))
        }
        _ => Rebased::Lost,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lsn::Lsn;

    fn at(timeline: u32, lsn: u64) -> Position {
        Position {
            timeline,
            lsn: Lsn::new(lsn),
        }
    }

    #[test]
    fn floors_on_the_newest_timeline_or_without_a_position_are_kept() {
        for floor in [Floor::None, Floor::Unknown, Floor::At(at(2, 50))] {
            assert_eq!(rebase(floor, 2, Some(at(2, 100))), Rebased::Floor(floor));
        }
        // Before any primary was seen (newest 0) nothing is moved.
        let floor = Floor::At(at(1, 50));
        assert_eq!(rebase(floor, 0, None), Rebased::Floor(floor));
    }

    #[test]
    fn an_older_floor_within_the_new_history_moves_to_the_new_timeline() {
        let moved = rebase(Floor::At(at(1, 100)), 2, Some(at(2, 100)));
        assert_eq!(moved, Rebased::Floor(Floor::At(at(2, 100))));
        let moved = rebase(Floor::At(at(1, 7)), 2, Some(at(2, 100)));
        assert_eq!(moved, Rebased::Floor(Floor::At(at(2, 7))));
    }

    #[test]
    fn an_older_floor_beyond_the_switch_or_of_unknown_origin_is_lost() {
        assert_eq!(
            rebase(Floor::At(at(1, 101)), 2, Some(at(2, 100))),
            Rebased::Lost
        );
        assert_eq!(rebase(Floor::At(at(1, 1)), 2, None), Rebased::Lost);
        // A switch point of an older promotion says nothing about the newest timeline.
        assert_eq!(
            rebase(Floor::At(at(1, 1)), 3, Some(at(2, 100))),
            Rebased::Lost
        );
    }
}
