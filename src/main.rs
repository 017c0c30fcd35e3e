//! The `tadsr-edge` command line: a thin layer over the library.

mod bench_command;
mod cli;
mod run_command;

fn main() {
    let code = cli::main();
    std::process::exit(code);
}
