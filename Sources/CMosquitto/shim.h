#ifndef SPECTRA_CMOSQUITTO_SHIM_H
#define SPECTRA_CMOSQUITTO_SHIM_H
// libmosquitto's client API (MQTT 3.1.1 and 5) and its property helpers.
#include <mosquitto.h>
#include <mqtt_protocol.h>
#endif
