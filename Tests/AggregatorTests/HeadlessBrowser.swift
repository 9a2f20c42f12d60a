import Foundation
import SpectraTesting

/// A real headless Chromium driven over the DevTools protocol (on a pipe, no port): the
/// dashboard signed in to, navigated and signed out of as an operator does it, with every
/// Content-Security-Policy violation and script error the browser reports collected.
enum HeadlessBrowser {
    /// What one sign-in, navigation and sign-out saw.
    struct Visit: Decodable {
        /// The page an anonymous visitor to `/` gets (the login form).
        var anonymousPage: String
        /// The error the form shows after a wrong password.
        var wrongPasswordError: String?
        /// Who the dashboard says is signed in.
        var signedInAs: String?
        /// The dashboard's DOM once it has loaded `hashPath` (after signing in).
        var dashboard: String
        /// Where signing out lands, and what the API answers the same browser then.
        var afterSignOutPath: String
        var apiAfterSignOut: String
        /// CSP violations and script errors, in the order the browser reported them; the
        /// last is one the script plants (an inline style attribute) to show the collection works.
        var problems: [String]
    }

    static func visit(base: String, user: String, password: String, hashPath: String, ready: String) async throws -> Visit {
        guard let chromium = TestEnvironment.executable("chromium") ?? TestEnvironment.executable("chromium-browser") else {
            throw TestEnvironmentError("chromium is not installed; run Deploy/bootstrap.sh (the dashboard test needs a real browser)")
        }
        let profile = try TestEnvironment.temporaryDirectory("chromium")
        defer { try? FileManager.default.removeItem(at: profile) }
        let run = try await ChildProcess.run(
            "/usr/bin/env", ["python3", "-c", script, chromium, base, user, password, profile.path, hashPath, ready], timeout: 120)
        guard run.status == 0 else { throw TestEnvironmentError("the browser run failed (\(String(describing: run.status))): \(run.stderr.suffix(1500))") }
        return try JSONDecoder().decode(Visit.self, from: Data(run.stdout.utf8))
    }

    static let script = #"""
import json, os, select, subprocess, sys, time
chromium, base, user, password, profile, hash_path, ready = sys.argv[1:8]
to_r, to_w = os.pipe()
from_r, from_w = os.pipe()
def child():
    a, b = os.dup(to_r), os.dup(from_w)
    os.dup2(a, 3); os.dup2(b, 4)
proc = subprocess.Popen([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                         "--user-data-dir=" + profile, "--remote-debugging-pipe", "about:blank"],
                        preexec_fn=child, close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
os.close(to_r); os.close(from_w)
buffer = b""; next_id = 0; problems = []; log = []

def read_message(deadline):
    global buffer
    while b"\0" not in buffer:
        remaining = deadline - time.time()
        if remaining <= 0: raise TimeoutError("no answer from chromium")
        ready_fds, _, _ = select.select([from_r], [], [], remaining)
        if ready_fds:
            chunk = os.read(from_r, 1 << 16)
            if not chunk: raise EOFError("chromium closed the pipe")
            buffer += chunk
    raw, buffer = buffer.split(b"\0", 1)
    return json.loads(raw)

def note(message):
    method, params = message.get("method"), message.get("params", {})
    if method == "Log.entryAdded":
        entry = params.get("entry", {})
        log.append(entry.get("level", "") + ": " + entry.get("text", "") + " " + entry.get("url", ""))
        if "Content Security Policy" in entry.get("text", "") or entry.get("source") == "violation":
            problems.append("csp: " + entry.get("text", ""))
    elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
        text = " ".join(str(arg.get("value", arg.get("description", ""))) for arg in params.get("args", []))
        if "Content Security Policy" in text: problems.append("csp: " + text)
    elif method == "Runtime.exceptionThrown":
        details = params.get("exceptionDetails", {})
        problems.append("exception: " + details.get("exception", {}).get("description", details.get("text", "")))

def send(method, params=None, session=None, timeout=30):
    global next_id
    next_id += 1
    message = {"id": next_id, "method": method, "params": params or {}}
    if session: message["sessionId"] = session
    os.write(to_w, json.dumps(message).encode() + b"\0")
    deadline = time.time() + timeout
    while True:
        answer = read_message(deadline)
        if answer.get("id") == next_id:
            if "error" in answer: raise RuntimeError(method + ": " + json.dumps(answer["error"]))
            return answer.get("result", {})
        note(answer)

target = send("Target.createTarget", {"url": "about:blank"})["targetId"]
session = send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
for domain in ["Page.enable", "Runtime.enable", "Log.enable"]: send(domain, session=session)

def evaluate(expression):
    result = send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}, session)
    return result.get("result", {}).get("value")

def wait_for(expression, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if evaluate(expression): return True
        except RuntimeError:
            pass  # the page is between documents
        time.sleep(0.1)
    try:
        seen = evaluate("location.href + ' | ' + document.title + ' | ' + (document.body ? document.body.innerText.slice(0, 300) : '')")
    except RuntimeError as error:
        seen = str(error)
    raise TimeoutError("waited for: " + expression + "; the page: " + str(seen) + "; problems: " + json.dumps(problems) + "; browser log: " + json.dumps(log[-10:]))

def sign_in(name, secret):
    evaluate("document.getElementById('username').value = %s; document.getElementById('password').value = %s;"
             "document.getElementById('login-form').requestSubmit(); true" % (json.dumps(name), json.dumps(secret)))

result = {}
try:
    send("Page.navigate", {"url": base + "/"}, session)
    wait_for("!!document.getElementById('login-form') && location.pathname === '/'")
    result["anonymousPage"] = evaluate("document.documentElement.outerHTML")
    sign_in(user, password + "-wrong")
    wait_for("!!document.getElementById('login-error')")
    result["wrongPasswordError"] = evaluate("document.getElementById('login-error').textContent")
    sign_in(user, password)
    wait_for("location.pathname === '/' && document.body.dataset.loaded === 'true'")
    result["signedInAs"] = evaluate("document.getElementById('user').textContent")
    send("Page.navigate", {"url": base + hash_path}, session)
    wait_for(ready)
    result["dashboard"] = evaluate("document.documentElement.outerHTML")
    evaluate("document.getElementById('logout').click(); true")
    wait_for("location.pathname === '/login' && !!document.getElementById('login-form')")
    result["afterSignOutPath"] = evaluate("location.pathname")
    send("Page.navigate", {"url": base + "/api/v1/fleet/summary"}, session)
    wait_for("location.pathname === '/api/v1/fleet/summary' && !!document.body && document.body.innerText.length > 0")
    result["apiAfterSignOut"] = evaluate("document.body.innerText")
    # A violation planted on purpose: the collection must see it.
    evaluate("document.body.insertAdjacentHTML('beforeend', '<div style=\"color:red\">planted</div>'); true")
    time.sleep(0.5)
    try:
        evaluate("1")
    except RuntimeError:
        pass
    result["problems"] = problems
finally:
    try: send("Browser.close", timeout=5)
    except Exception: pass
    try: proc.wait(timeout=10)
    except subprocess.TimeoutExpired: proc.kill()
print(json.dumps(result))
"""#
}
