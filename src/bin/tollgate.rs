//! The `tollgate` command-line tool: the engine the filter runs, built natively. All logic lives in
//! `tollgate::cli`; this file only hands it the arguments and the exit code back.

#[cfg(not(target_arch = "wasm32"))]
fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = tollgate::cli::run(&args, &mut std::io::stdout(), &mut std::io::stderr());
    std::process::ExitCode::from(code)
}

// The module Envoy loads is the library; there is no command-line tool in wasm.
#[cfg(target_arch = "wasm32")]
fn main() {}
