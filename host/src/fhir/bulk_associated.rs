//! `includeAssociatedData` of an export: the Provenance resources that target a page of
//! exported resources, found by the search engine as `Provenance?target=T/id,...` at the
//! export's snapshot under what the caller may search of Provenance — all of them
//! (`RelevantProvenanceResources`) or, for each of the page's resources, the one with the
//! latest `recorded` (`LatestProvenanceResources`).

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::bulk::{Associated, AssociatedPlan};
use super::definitions::ResourceType;
use super::error::FhirError;
use super::search::value::parse_date;
use super::search::{Criterion, ReferenceValue, SearchValue};
use crate::store::Store;
use crate::store::search::{Branch, Found, PageFrom, SearchSpec};

/// Targets per Provenance search: one criterion with this many references at most.
const TARGETS_PER_QUERY: usize = 500;
/// Provenance resources read per page of one search.
const PAGE: i64 = 1000;

/// The Provenance that `plan` adds for the exported resources `page` (of one type), in
/// the order the searches found them; one Provenance can be there more than once.
pub async fn provenance_of(
    store: &Store,
    plan: &AssociatedPlan,
    snapshot: i64,
    base_url: &str,
    page: &[Found],
) -> Result<Vec<Found>, FhirError> {
    let provenance = ResourceType::parse("Provenance").expect("Provenance exists");
    let target = provenance
        .search_param("target")
        .expect("Provenance has a target parameter");
    let mut added = Vec::new();
    for chunk in page.chunks(TARGETS_PER_QUERY) {
        let values: Vec<SearchValue> = chunk
            .iter()
            .filter_map(|f| {
                Some(SearchValue::Reference(ReferenceValue {
                    target_type: Some(ResourceType::parse(&f.resource_type)?),
                    id: Some(f.id.clone()),
                    ..ReferenceValue::default()
                }))
            })
            .collect();
        let branches = [Branch {
            resource_type: Some(provenance),
            criteria: vec![Criterion::Match {
                param: target,
                values,
                negated: false,
            }],
        }];
        let spec = SearchSpec {
            branches: &branches,
            sort: &[],
            snapshot,
            as_of_snapshot: true,
            access: &plan.access,
            reach: &plan.reach,
            base_url,
        };
        let found = every_page(store, &spec).await?;
        match plan.which {
            Associated::Relevant => added.extend(found),
            Associated::Latest => added.extend(latest_per_target(chunk, found)),
        }
    }
    Ok(added)
}

/// Every match of `spec`, page after page.
async fn every_page(store: &Store, spec: &SearchSpec<'_>) -> Result<Vec<Found>, FhirError> {
    let mut found = Vec::new();
    let mut from = PageFrom::First;
    loop {
        let page = store.search_page(spec, &from, PAGE).await?;
        found.extend(page.rows);
        match page.last {
            Some(last) if page.more => from = PageFrom::After(last),
            _ => return Ok(found),
        }
    }
}

/// A Provenance's place in time: `recorded`, then `meta.lastUpdated` (ms).
type OrderKey = (i64, i64);
/// A resource a Provenance targets: (type, id).
type Target = (String, String);

/// Of `found` (Provenance), for each of `targets` that one of them targets, the one
/// with the latest `recorded` (then the latest `meta.lastUpdated`, then the one created
/// last); each winner once, in the order of `found`.
fn latest_per_target(targets: &[Found], found: Vec<Found>) -> Vec<Found> {
    let wanted: HashSet<(&str, &str)> = targets
        .iter()
        .map(|f| (f.resource_type.as_str(), f.id.as_str()))
        .collect();
    // Each Provenance read once: its order key and its targets.
    let (keys, targeted): (Vec<OrderKey>, Vec<Vec<Target>>) = found
        .iter()
        .map(|p| {
            let resource = serde_json::from_str::<Value>(&p.content).unwrap_or_default();
            (
                (recorded_ms(&resource), p.last_updated),
                targets_of(&resource),
            )
        })
        .unzip();
    let mut best: HashMap<Target, usize> = HashMap::new();
    for (n, targets) in targeted.into_iter().enumerate() {
        for (t, id) in targets {
            if !wanted.contains(&(t.as_str(), id.as_str())) {
                continue;
            }
            let winner = best.entry((t, id)).or_insert(n);
            if keys[n] >= keys[*winner] {
                *winner = n;
            }
        }
    }
    let winners: HashSet<usize> = best.into_values().collect();
    found
        .into_iter()
        .enumerate()
        .filter(|(n, _)| winners.contains(n))
        .map(|(_, p)| p)
        .collect()
}

/// `Provenance.recorded` in ms since the epoch (`i64::MIN` when absent or unreadable).
fn recorded_ms(provenance: &Value) -> i64 {
    provenance["recorded"]
        .as_str()
        .and_then(|r| parse_date(r).ok())
        .map_or(i64::MIN, |range| range.low)
}

/// The (type, id) of each literal reference in `Provenance.target`.
fn targets_of(provenance: &Value) -> Vec<Target> {
    provenance["target"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|t| ReferenceValue::parse_literal(t["reference"].as_str()?).ok())
        .filter_map(|r| Some((r.target_type?.as_str().to_owned(), r.id?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(resource_type: &str, id: &str, last_updated: i64, content: Value) -> Found {
        Found {
            resource_type: resource_type.into(),
            id: id.into(),
            version_id: 1,
            last_updated,
            content: content.to_string(),
        }
    }

    fn provenance(id: &str, recorded: &str, targets: &[&str], last_updated: i64) -> Found {
        let target: Vec<Value> = targets
            .iter()
            .map(|t| serde_json::json!({"reference": t}))
            .collect();
        found(
            "Provenance",
            id,
            last_updated,
            serde_json::json!({"resourceType": "Provenance", "id": id, "recorded": recorded, "target": target}),
        )
    }

    fn ids(found: &[Found]) -> Vec<&str> {
        found.iter().map(|f| f.id.as_str()).collect()
    }

    #[test]
    fn the_latest_recorded_provenance_of_each_target_wins() {
        let targets = [
            found("Patient", "a", 0, serde_json::json!({})),
            found("Patient", "b", 0, serde_json::json!({})),
        ];
        let candidates = vec![
            provenance("old-a", "2020-01-01T00:00:00Z", &["Patient/a"], 5),
            // Later in time although written earlier, and in another zone.
            provenance("new-a", "2021-06-01T02:00:00+02:00", &["Patient/a"], 1),
            provenance("only-b", "2019-01-01T00:00:00Z", &["Patient/b"], 2),
            // Targets a resource outside the page only.
            provenance("other", "2030-01-01T00:00:00Z", &["Patient/c"], 3),
        ];
        assert_eq!(
            ids(&latest_per_target(&targets, candidates)),
            ["new-a", "only-b"]
        );
    }

    #[test]
    fn one_provenance_latest_for_two_targets_comes_once_and_ties_go_to_the_later_write() {
        let targets = [
            found("Patient", "a", 0, serde_json::json!({})),
            found("Observation", "o", 0, serde_json::json!({})),
        ];
        let candidates = vec![
            provenance(
                "both",
                "2022-01-01T00:00:00Z",
                &["Patient/a", "Observation/o"],
                1,
            ),
            provenance("tie", "2022-01-01T00:00:00Z", &["Observation/o"], 1),
            provenance("tie-later", "2022-01-01T00:00:00Z", &["Observation/o"], 2),
        ];
        assert_eq!(
            ids(&latest_per_target(&targets, candidates)),
            ["both", "tie-later"]
        );
    }

    #[test]
    fn an_unreadable_recorded_loses_to_any_readable_one() {
        let targets = [found("Patient", "a", 0, serde_json::json!({}))];
        let candidates = vec![
            provenance("good", "2001-01-01T00:00:00Z", &["Patient/a"], 1),
            provenance("bad", "yesterday", &["Patient/a"], 9),
        ];
        assert_eq!(ids(&latest_per_target(&targets, candidates)), ["good"]);
    }
}
