#ifndef SPECTRA_CMOSQUITTO_SHIM_H
#define SPECTRA_CMOSQUITTO_SHIM_H
// libmosquitto's client API (MQTT 3.1.1 and 5) and its protocol constants.
#include <mosquitto.h>
#include <mqtt_protocol.h>
// The Linux readiness API the event loop drives many clients' sockets with.
#include <sys/epoll.h>
#include <sys/eventfd.h>
#endif
