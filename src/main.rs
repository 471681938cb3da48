use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = keygate::cli::Cli::parse();
    match keygate::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("keygate: {message}");
            std::process::ExitCode::from(2)
        }
    }
}
