"""Link layer: the devices the stack exchanges raw IP packets with.

:mod:`tcpstack.link.tun` holds :class:`~tcpstack.link.tun.TunDevice`, a thin,
non-blocking I/O shell over a Linux TUN interface (``/dev/net/tun``, see the
kernel's ``Documentation/networking/tuntap.rst``). Each ``read`` on the device
returns exactly one IP packet the kernel routed into the interface, and each
``write`` injects exactly one IP packet into the kernel's receive path. No
protocol logic lives here.
"""
