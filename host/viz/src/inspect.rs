//! Reading an `.rrd` back with rerun's own decoder: which entities it holds (static or over
//! time), and the blueprint's views. What the tests check a recording against, and what
//! `reachy viz info` prints.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use re_log_types::{LogMsg, StoreKind};

/// A view of the recording's blueprint.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ViewInfo {
    /// The view's class (`3D`, `2D`, `TimeSeries`, `TextLog`, …).
    pub class: String,
    /// Its name.
    pub name: String,
    /// Its origin entity.
    pub origin: String,
}

/// What a recording holds.
#[derive(Debug, Clone, Default)]
pub struct RrdSummary {
    /// Entities of the recording with static data.
    pub static_entities: BTreeSet<String>,
    /// Entities of the recording with data over time, and how many rows each has.
    pub temporal_rows: BTreeMap<String, usize>,
    /// Timelines used.
    pub timelines: BTreeSet<String>,
    /// The blueprint's views (empty when the recording has no blueprint).
    pub views: Vec<ViewInfo>,
    /// The blueprint is activated (sent complete).
    pub blueprint_activated: bool,
}

/// Errors reading a recording.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The file cannot be opened.
    #[error("{0}: {1}")]
    Open(String, std::io::Error),
    /// Not a readable rerun recording.
    #[error("{0}: not a rerun 0.36 recording: {1}")]
    Decode(String, String),
}

fn strings(chunk: &re_chunk::Chunk, component: &'static str) -> Vec<String> {
    chunk
        .iter_slices::<String>(component.into())
        .flat_map(|s| s.iter().map(|x| x.to_string()).collect::<Vec<_>>())
        .collect()
}

/// Decode `path` and summarise it.
pub fn summarize(path: &Path) -> Result<RrdSummary, InspectError> {
    let name = path.display().to_string();
    let f = std::fs::File::open(path).map_err(|e| InspectError::Open(name.clone(), e))?;
    let mut out = RrdSummary::default();
    let mut views = BTreeMap::new();
    for msg in re_log_encoding::DecoderApp::decode_lazy(std::io::BufReader::new(f)) {
        let msg = msg.map_err(|e| InspectError::Decode(name.clone(), e.to_string()))?;
        match msg {
            LogMsg::SetStoreInfo(_) => {}
            LogMsg::BlueprintActivationCommand(_) => out.blueprint_activated = true,
            LogMsg::ArrowMsg(store, arrow) => {
                let chunk = re_chunk::Chunk::from_arrow_msg(&arrow)
                    .map_err(|e| InspectError::Decode(name.clone(), e.to_string()))?;
                let entity = chunk.entity_path().to_string();
                let entity = entity.trim_start_matches('/').to_string();
                match store.kind() {
                    StoreKind::Blueprint => {
                        let class = strings(&chunk, "ViewBlueprint:class_identifier");
                        if let Some(class) = class.first() {
                            let v = ViewInfo {
                                class: class.clone(),
                                name: strings(&chunk, "ViewBlueprint:display_name")
                                    .first()
                                    .cloned()
                                    .unwrap_or_default(),
                                origin: strings(&chunk, "ViewBlueprint:space_origin")
                                    .first()
                                    .map(|o| o.trim_start_matches('/').to_string())
                                    .unwrap_or_default(),
                            };
                            views.insert(entity, v);
                        }
                    }
                    StoreKind::Recording => {
                        if chunk.is_static() {
                            out.static_entities.insert(entity);
                        } else {
                            for t in chunk.timelines().keys() {
                                out.timelines.insert(t.to_string());
                            }
                            *out.temporal_rows.entry(entity).or_default() += chunk.num_rows();
                        }
                    }
                }
            }
        }
    }
    out.views = views.into_values().collect();
    out.views.sort();
    Ok(out)
}
