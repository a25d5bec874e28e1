//! The one way every intake feeds a stage whose key groups keep state, and how an idle intake
//! hears of a new routing.

use super::Takeover;
use crate::model::tuple::Tuple;
use crate::task::operator::{Operator, Stop};

/// Feeds tuple `seq` of link `from` to `op`: the one way every intake feeds a stage whose
/// key groups keep state (`takeover`: the group's state is taken over before, and what the
/// tuple made final is handed over after).
pub(in crate::task) async fn feed(
    op: &mut Operator,
    takeover: Option<&mut Takeover<'_>>,
    (from, seq): (u32, u64),
    t: Tuple,
    emit_ns: u64,
) -> Result<(), Stop> {
    let Some(k) = takeover else {
        return op.feed(t, emit_ns).await;
    };
    k.before(op, from, seq, &t).await?;
    op.feed(t, emit_ns).await?;
    k.fed(op, from, seq).await
}

/// Resolves when the leader told `takeover` a newer routing (never without one); then call
/// [`Takeover::refresh`], outside any race: a handover must not be dropped halfway.
pub(in crate::task) async fn routing_changed(takeover: Option<&mut Takeover<'_>>) {
    match takeover {
        Some(k) => k.routing_changed().await,
        None => std::future::pending().await,
    }
}
