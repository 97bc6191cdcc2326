//! The emulator is only as good as its fidelity: this runs Google's own Python client
//! (google-api-python-client + google-auth, see tests/emulator/requirements.txt) against it, so
//! the emulator is checked by something other than pgdrive's own Drive client.

use std::process::Command;

#[test]
fn googles_python_client_agrees_with_the_emulator() {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/emulator/fidelity_check.py"
    );
    let out = Command::new("python3")
        .arg(script)
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("ModuleNotFoundError"),
        "install the emulator's Python packages: pip install -r tests/emulator/requirements.txt\n{stderr}"
    );
    assert!(
        out.status.success(),
        "fidelity check failed:\n{stdout}\n{stderr}"
    );
    let summary = stdout
        .lines()
        .rev()
        .find(|l| l.contains(" passed, "))
        .unwrap_or_default();
    assert!(summary.ends_with(" 0 failed"), "{summary}");
    let passed: u32 = summary
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(passed >= 40, "too few checks ran: {summary}");
}
