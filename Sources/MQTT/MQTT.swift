import CMosquitto

/// libmosquitto's version as `major.minor.revision`.
public func mosquittoLibraryVersion() -> String {
    var major: Int32 = 0
    var minor: Int32 = 0
    var revision: Int32 = 0
    mosquitto_lib_version(&major, &minor, &revision)
    return "\(major).\(minor).\(revision)"
}
