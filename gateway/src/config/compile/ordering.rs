//! A destination's ordered delivery (`ordering`, `reorder_window`, `stale`, `on_dead`): read
//! and checked here, enforced by the store's delivery claim (docs/ordering.md). The three
//! tuning keys mean nothing without `ordering = "subject"`, so setting one without it is an
//! error rather than a silent no-op.

use super::Pass;
use crate::config::raw::RawDestination;
use crate::config::{OnDead, StaleEvents, SubjectOrdering};
use std::time::Duration;
use toml::Spanned;

/// Longest `reorder_window`: every event of an ordered destination waits this long before
/// its first attempt, so a long one is a long delay for all of them.
const MAX_REORDER_WINDOW: Duration = Duration::from_secs(10 * 60);

pub(super) fn compile_ordering(
    pass: &mut Pass<'_>,
    table: &str,
    raw: &RawDestination,
) -> Option<SubjectOrdering> {
    let ordered = match &raw.ordering {
        None => false,
        Some(v) => match v.get_ref().as_str() {
            "none" => false,
            "subject" => true,
            other => {
                pass.error(
                    v.span(),
                    format!("{table}.ordering"),
                    format!("must be \"none\" or \"subject\", not {other:?}"),
                );
                false
            }
        },
    };
    if !ordered {
        let unused = [
            (
                "reorder_window",
                raw.reorder_window.as_ref().map(Spanned::span),
            ),
            ("stale", raw.stale.as_ref().map(Spanned::span)),
            ("on_dead", raw.on_dead.as_ref().map(Spanned::span)),
        ];
        for (key, span) in unused {
            if let Some(span) = span {
                pass.error(
                    span,
                    format!("{table}.{key}"),
                    "applies only with `ordering = \"subject\"`",
                );
            }
        }
        return None;
    }
    let reorder_window = raw.reorder_window.as_ref().map_or(Duration::ZERO, |w| {
        let d = w.get_ref().0;
        if d > MAX_REORDER_WINDOW {
            pass.error(
                w.span(),
                format!("{table}.reorder_window"),
                "must be at most 10m",
            );
        }
        d
    });
    let stale = choice(
        pass,
        &format!("{table}.stale"),
        raw.stale.as_ref(),
        &[
            ("deliver", StaleEvents::Deliver),
            ("drop", StaleEvents::Drop),
        ],
    );
    let on_dead = choice(
        pass,
        &format!("{table}.on_dead"),
        raw.on_dead.as_ref(),
        &[("hold", OnDead::Hold), ("skip", OnDead::Skip)],
    );
    Some(SubjectOrdering {
        reorder_window,
        stale,
        on_dead,
    })
}

/// One of `options` (the first is the default when the key is absent).
fn choice<T: Copy>(
    pass: &mut Pass<'_>,
    key: &str,
    value: Option<&Spanned<String>>,
    options: &[(&str, T); 2],
) -> T {
    let [(first_name, first), (second_name, second)] = *options;
    let Some(v) = value else {
        return first;
    };
    match v.get_ref().as_str() {
        name if name == first_name => first,
        name if name == second_name => second,
        other => {
            pass.error(
                v.span(),
                key,
                format!("must be \"{first_name}\" or \"{second_name}\", not {other:?}"),
            );
            first
        }
    }
}
