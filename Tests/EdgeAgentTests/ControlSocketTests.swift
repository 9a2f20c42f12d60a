import EdgeAgent
import Foundation
import SpectraTesting
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("Local control socket")
struct ControlSocketTests {
    /// A server on a fresh socket path answering `{"ok":true}` after `delay`.
    final class Server: Sendable {
        let folder: URL
        let path: String
        let server: ControlSocketServer
        let running: Task<Void, Never>

        init(delay: Duration = .zero) throws {
            folder = try TestEnvironment.temporaryDirectory("control")
            path = folder.appendingPathComponent("agent.sock").path
            server = try ControlSocketServer(path: path) { _, _ in
                try? await Task.sleep(for: delay)
                return Data(#"{"ok":true}"#.utf8)
            }
            let server = self.server
            running = Task { await server.run() }
        }

        /// Stops the server and waits until it stopped accepting.
        func stop() async {
            server.stop()
            await running.value
            try? FileManager.default.removeItem(at: folder)
        }

        /// A connection that sends nothing.
        func connectSilently() -> Int32 {
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &address.sun_path) { raw in
                raw.copyBytes(from: Array(path.utf8) + [0])
            }
            _ = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            return fd
        }

        /// Sends a request from a thread of its own (the client blocks): whether the answer
        /// said ok, or the error's text.
        func request(timeoutSeconds: Int = 30) async -> Result<Bool, ControlSocketError> {
            let path = self.path
            return await withCheckedContinuation { continuation in
                Thread.detachNewThread {
                    do {
                        let answer = try ControlSocketClient.send(["command": "status"], path: path, timeoutSeconds: timeoutSeconds)
                        continuation.resume(returning: .success(answer["ok"] as? Bool == true))
                    } catch let error as ControlSocketError {
                        continuation.resume(returning: .failure(error))
                    } catch {
                        continuation.resume(returning: .failure(ControlSocketError("\(error)")))
                    }
                }
            }
        }
    }

    @Test("clients that connect and say nothing hold up no one else, and are let go after a timeout")
    func silentClients() async throws {
        let server = try Server()
        // Many more than the threads Swift's tasks run on: on those, each silent client held
        // one, and a few stopped every task of the agent.
        let silent = (0..<16).map { _ in server.connectSilently() }
        defer { silent.forEach { close($0) } }
        // 60 s: the whole test suite runs in this process, and on 2 cores its busiest moments
        // have kept the answer (the server's task) waiting past 30 s.
        let asked = ContinuousClock.now
        let answer = await server.request(timeoutSeconds: 60)
        #expect(try answer.get() == true, "a request behind 16 silent clients is answered")
        print("control socket: answered behind 16 silent clients in \(ContinuousClock.now - asked)")
        // The server hangs up on a silent client once its timeout has run out.
        let probe = silent[0]
        var limit = timeval(tv_sec: 20, tv_usec: 0)
        setsockopt(probe, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        var byte: UInt8 = 0
        let started = ContinuousClock.now
        #expect(read(probe, &byte, 1) == 0, "end of file, not the probe's own timeout")
        #expect(ContinuousClock.now - started < .seconds(15))
        await server.stop()
    }

    @Test("an agent that does not answer in time gets an error that says so")
    func unansweredRequest() async throws {
        let server = try Server(delay: .seconds(5))
        let answer = await server.request(timeoutSeconds: 1)
        #expect(throws: ControlSocketError.self) { try answer.get() }
        if case .failure(let error) = answer { #expect(error.description.contains("did not answer within 1 s")) }
        await server.stop()
    }

    @Test("after stop, the socket file is gone and a request says no agent answers")
    func stopped() async throws {
        let server = try Server()
        #expect(try await server.request().get() == true)
        await server.stop()
        #expect(!FileManager.default.fileExists(atPath: server.path))
        if case .failure(let error) = await server.request() {
            #expect(error.description.contains("no agent answers"))
        } else {
            Issue.record("a stopped server answered")
        }
    }
}
