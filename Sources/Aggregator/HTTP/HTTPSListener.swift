import HummingbirdCore
import Logging
import NIOCore
import NIOSSL
import Synchronization

/// The HTTPS listener's certificate and key, read from PEM files and read again on SIGHUP
/// (a renewed certificate takes effect for new connections without a restart; open ones keep
/// theirs). A reload that fails keeps the previous certificate and says why.
public final class TLSCertificateSource: Sendable {
    public let certificatePath: String
    public let keyPath: String
    private let context: Mutex<NIOSSLContext>

    /// Reads both files; throws saying which one is wrong.
    public init(certificatePath: String, keyPath: String) throws {
        self.certificatePath = certificatePath
        self.keyPath = keyPath
        context = Mutex(try Self.load(certificatePath: certificatePath, keyPath: keyPath))
    }

    var current: NIOSSLContext { context.withLock { $0 } }

    /// Reads the files again; on failure the current certificate stays.
    public func reload(logger: Logger) {
        do {
            let fresh = try Self.load(certificatePath: certificatePath, keyPath: keyPath)
            context.withLock { $0 = fresh }
            logger.notice("reloaded the HTTPS certificate", metadata: ["http.tls.certificate": "\(certificatePath)"])
        } catch {
            logger.error(
                "could not reload the HTTPS certificate; still serving the previous one",
                metadata: ["http.tls.certificate": "\(certificatePath)", "error": "\(error)"])
        }
    }

    /// Why a certificate or key could not be used.
    public struct LoadError: Error, CustomStringConvertible {
        public var description: String
    }

    static func load(certificatePath: String, keyPath: String) throws -> NIOSSLContext {
        let chain: [NIOSSLCertificate]
        do {
            chain = try NIOSSLCertificate.fromPEMFile(certificatePath)
        } catch {
            throw LoadError(description: "http.tls.certificate \(certificatePath) is not a readable PEM certificate (\(error))")
        }
        guard !chain.isEmpty else { throw LoadError(description: "http.tls.certificate \(certificatePath) holds no certificate") }
        let key: NIOSSLPrivateKey
        do {
            key = try NIOSSLPrivateKey(file: keyPath, format: .pem)
        } catch {
            throw LoadError(description: "http.tls.key \(keyPath) is not a readable PEM private key (\(error))")
        }
        var configuration = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        configuration.minimumTLSVersion = .tlsv12
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw LoadError(description: "http.tls.key \(keyPath) does not belong to the certificate in \(certificatePath) (\(error))")
        }
    }
}

/// A child channel that speaks TLS with the certificate ``TLSCertificateSource`` holds when
/// the connection is accepted, then hands the connection to the HTTP channel.
struct ReloadingTLSChannel<BaseChannel: ServerChildChannel>: ServerChildChannel {
    typealias Value = BaseChannel.Value
    let base: BaseChannel
    let certificates: TLSCertificateSource

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: certificates.current))
        }.flatMap {
            base.setup(channel: channel, logger: logger)
        }
    }

    func handle(value: BaseChannel.Value, logger: Logger) async {
        await base.handle(value: value, logger: logger)
    }
}

extension ReloadingTLSChannel: HTTPChannelHandler where BaseChannel: HTTPChannelHandler {
    var responder: HTTPChannelHandler.Responder { base.responder }
}
