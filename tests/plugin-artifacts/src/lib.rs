//! Absolute paths of the plugin components under `plugins/`, for tests and benchmarks.
//!
//! `build.rs` builds every plugin when this crate is built (Rust plugins and fixtures with
//! `cargo build --release --target wasm32-wasip2` in `plugins/`, the JavaScript plugin with
//! componentize-js, the Python plugin with componentize-py, the C plugin with clang and the
//! wit-bindgen-c / wit-component libraries) and generates one constant per plugin plus [`ALL`]. Depend on this crate (e.g. as a dev-dependency) and use the constants:
//!
//! ```
//! let wasm = std::fs::read(plugin_artifacts::UNIFY_PAYMENTS).expect("built by build.rs");
//! assert_eq!(&wasm[..4], b"\0asm");
//! ```
//!
//! Outputs live under `<repo>/target/wasm-plugins`, tool installs (npm packages, the Python
//! venv) under `<repo>/target/plugin-tools` and `plugins/js/*/node_modules`. Nothing is
//! rebuilt when nothing under `plugins/` or `wit/` changed. See `plugins/README.md`.

include!(concat!(env!("OUT_DIR"), "/plugins.rs"));

#[cfg(test)]
mod tests {
    use super::*;

    /// Every artifact exists and is a component (layer 1), not a core module.
    #[test]
    fn every_artifact_is_a_component() {
        assert_eq!(ALL.len(), 13);
        for (name, path) in ALL {
            let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{name}: {path}: {e}"));
            assert_eq!(&bytes[..4], b"\0asm", "{name}: not wasm");
            // Bytes 4..8: version 0x000d and layer 0x0001 for components.
            assert_eq!(
                &bytes[4..8],
                &[0x0d, 0x00, 0x01, 0x00],
                "{name}: not a component"
            );
        }
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<&str> = ALL.iter().map(|(name, _)| *name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
    }
}
