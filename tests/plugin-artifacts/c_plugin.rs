//! Step 4 of the plugin build: the C example `plugins/c/large-deposits` into a component.
//!
//! The same three steps as its `build.sh` (plugins/README.md, "C"), with the two component
//! tools replaced by the libraries they are made of, so the suite needs no `cargo install` of
//! wit-bindgen-cli or wasm-tools (about 15 minutes on 2 cores):
//! 1. `wit-bindgen c wit --world plugin`: the `wit-bindgen-c` crate writes `plugin.h`,
//!    `plugin.c` and `plugin_component_type.o` into `<work>/bindings`;
//! 2. `clang --target=wasm32-wasi -mexec-model=reactor ...` (Debian's clang, lld, wasi-libc and
//!    libclang-rt-14-dev-wasm32; `$CLANG` overrides the command) -> `<work>/core.wasm`;
//! 3. `wasm-tools component new` + `validate`: `wit_component::ComponentEncoder` with
//!    validation on -> the component.
//!
//! It never writes outside the `work` directory and the output path it is given. It does not
//! add the WASI preview1 adapter: the example imports no WASI, and a module that does fails
//! step 3 with the encoder's own message (see `build.sh`, which knows the adapter).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use wit_bindgen_core::wit_parser::Resolve;

/// The example's C sources, compiled together with the generated `plugin.c`.
const SOURCES: &[&str] = &["large_deposits.c", "decimal.c"];

/// Where [`build`] leaves the generated `plugin.h` and `plugin.c` under `work` (kept: the
/// native `handle_test.c` compiles against them).
pub(crate) fn bindings_dir(work: &Path) -> PathBuf {
    work.join("bindings")
}

/// Builds the component at `out` from the sources in `plugin_dir` against the WIT in `wit`,
/// using `work` for the bindings and the core module.
pub(crate) fn build(plugin_dir: &Path, wit: &Path, work: &Path, out: &Path) -> Result<(), String> {
    let bindings = bindings_dir(work);
    generate_bindings(wit, &bindings)?;
    let core = work.join("core.wasm");
    compile(plugin_dir, &bindings, &core)?;
    let core_bytes = fs::read(&core).map_err(|e| format!("{}: {e}", core.display()))?;
    let component = wit_component::ComponentEncoder::default()
        .validate(true)
        .module(&core_bytes)
        .and_then(|mut encoder| encoder.encode())
        .map_err(|e| {
            format!(
                "making a component of {} failed: {e:#}\n(a module that imports \
                 wasi_snapshot_preview1, i.e. uses libc I/O, needs the reactor adapter: \
                 plugins/c/large-deposits/build.sh adds it)",
                core.display()
            )
        })?;
    if let Some(dir) = out.parent() {
        fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    fs::write(out, component).map_err(|e| format!("{}: {e}", out.display()))
}

/// Step 1: `wit-bindgen c <wit> --world plugin --out-dir <dir>`, default options.
fn generate_bindings(wit: &Path, dir: &Path) -> Result<(), String> {
    let mut resolve = Resolve::default();
    let (package, _) = resolve
        .push_path(wit)
        .map_err(|e| format!("reading the WIT in {}: {e:#}", wit.display()))?;
    let world = resolve
        .select_world(&[package], Some("plugin"))
        .map_err(|e| format!("world `plugin` in {}: {e:#}", wit.display()))?;
    let mut files = wit_bindgen_core::Files::default();
    wit_bindgen_c::Opts::default()
        .build()
        .generate(&mut resolve, world, &mut files)
        .map_err(|e| format!("wit-bindgen-c: {e:#}"))?;
    // Stale files from an older generator version would otherwise stay next to the new ones.
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for (name, contents) in files.iter() {
        let path = dir.join(name);
        fs::write(&path, contents).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// Step 2: the core module, with the world's type object linked in (`component new` reads it).
fn compile(plugin_dir: &Path, bindings: &Path, core: &Path) -> Result<(), String> {
    let clang = std::env::var_os("CLANG").unwrap_or_else(|| "clang".into());
    let mut cmd = Command::new(&clang);
    cmd.args([
        "--target=wasm32-wasi",
        "-mexec-model=reactor",
        "-O2",
        "-std=c11",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-Wno-unused-parameter",
        "-Wl,--strip-debug",
    ])
    .arg(format!("-I{}", bindings.display()))
    .arg(format!("-I{}", plugin_dir.display()))
    .arg("-o")
    .arg(core);
    for source in SOURCES {
        cmd.arg(plugin_dir.join(source));
    }
    cmd.arg(bindings.join("plugin.c"))
        .arg(bindings.join("plugin_component_type.o"));
    crate::run_cmd(&mut cmd).map(drop).map_err(|e| {
        format!(
            "{e}\n(needs clang, lld, wasi-libc and libclang-rt-14-dev-wasm32 from Debian 12's apt, \
             or $CLANG naming a clang that targets wasm32-wasi)"
        )
    })
}
