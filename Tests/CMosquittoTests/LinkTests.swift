import CMosquitto
import Testing

@Test("libmosquitto links and reports a 2.x version (MQTT 5 support)")
func libraryVersion() {
    var major: Int32 = 0
    var minor: Int32 = 0
    var revision: Int32 = 0
    let packed = mosquitto_lib_version(&major, &minor, &revision)
    #expect(major == 2)
    #expect(packed == major * 1_000_000 + minor * 1000 + revision)
    #expect(mosquitto_lib_init() == Int32(MOSQ_ERR_SUCCESS.rawValue))
    #expect(mosquitto_lib_cleanup() == Int32(MOSQ_ERR_SUCCESS.rawValue))
}
