//! One config generation's routing side: the router (routes + loaded plugins) and the
//! destinations, built together and swapped in as one value. An event takes the pipeline that
//! is current when its routing starts and finishes on it, whatever reloads happen meanwhile.

use crate::config::{DestinationSettings, GatewayConfig};
use crate::delivery::{DeliveryError, Destination};
use crate::metrics::{DestinationMetrics, Metrics};
use crate::plugins::LoadedPlugin;
use crate::routing::Router;
use std::collections::HashMap;
use std::sync::Arc;

/// A destination with the settings its retries follow.
#[derive(Debug, Clone)]
pub struct Target {
    pub destination: Destination,
    pub settings: DestinationSettings,
    pub metrics: DestinationMetrics,
}

#[derive(Debug, Default)]
pub struct Pipeline {
    /// Counts successful config loads, starting at 1.
    pub generation: u64,
    pub router: Router,
    pub targets: HashMap<String, Target>,
}

impl Pipeline {
    /// Builds the routing side of `config`. Destinations whose settings did not change are
    /// taken over from `previous`, so their connection pools and concurrency caps carry on.
    pub fn build(
        config: &GatewayConfig,
        plugins: HashMap<String, Arc<LoadedPlugin>>,
        generation: u64,
        previous: Option<&Self>,
        metrics: &Metrics,
    ) -> Result<Self, DeliveryError> {
        let mut targets = HashMap::new();
        for settings in &config.destinations {
            let kept = previous
                .and_then(|p| p.targets.get(&settings.name))
                .filter(|t| same_settings(&t.settings, settings))
                .map(|t| t.destination.clone());
            let destination = match kept {
                Some(d) => d,
                None => Destination::new(settings)?,
            };
            targets.insert(
                settings.name.clone(),
                Target {
                    destination,
                    settings: settings.clone(),
                    metrics: metrics.for_destination(&settings.name),
                },
            );
        }
        Ok(Self {
            generation,
            router: Router::new(config.routes.clone(), plugins),
            targets,
        })
    }
}

fn same_settings(a: &DestinationSettings, b: &DestinationSettings) -> bool {
    use crate::config::DestinationKind::{File, Http};
    let kind = match (&a.kind, &b.kind) {
        (Http(x), Http(y)) => {
            x.url == y.url
                && x.signing_key.same_as(&y.signing_key)
                && x.timeout == y.timeout
                && x.allow_private_network == y.allow_private_network
        }
        (File(x), File(y)) => x.path == y.path,
        _ => false,
    };
    kind && a.concurrency == b.concurrency
}
