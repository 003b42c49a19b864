"""The device-tree nodes of the platform devices in CCSR, as QEMU's ppce500 describes them.

The same nodes, names, compatibles and interrupt specifiers QEMU 7.2 generates (checked against
``qemu-system-ppc -M ppce500,dumpdtb=FILE``), with two deliberate differences: the block sits at
physical 0xE000_0000 (this engine cannot reach QEMU's 0xF_E000_0000), and the GUTS node adds a
compatible that makes Linux freeze the timebase through DEVDISR for its SMP bring-up
(PLATFORM.md, "Platform devices").  No PCI, I2C or platform-bus nodes: the machine has none.
"""

from __future__ import annotations

import fdt

from machine import platform as P

SOC_NODE = f"soc@{P.CCSR_BASE:x}"
UART_NODE = f"serial@{P.UART0_OFFSET:x}"


def _irq(source: int) -> list[fdt.Property]:
    return [fdt.PropWords("interrupt-parent", P.DT_MPIC_PHANDLE),
            fdt.PropWords("interrupts", source, P.DT_IRQ_LEVEL_HIGH)]


def soc_node() -> fdt.Node:
    """``/soc@e0000000`` and its children (root #address-cells = #size-cells = 2)."""
    mpic = fdt.Node(
        f"pic@{P.MPIC_OFFSET:x}",
        fdt.PropStrings("compatible", "fsl,mpic"),
        fdt.PropStrings("device_type", "open-pic"),
        fdt.PropWords("reg", P.MPIC_OFFSET, P.MPIC_SIZE),
        fdt.PropWords("#address-cells", 0),
        fdt.PropWords("#interrupt-cells", 2),
        fdt.Property("interrupt-controller"),
        fdt.PropWords("phandle", P.DT_MPIC_PHANDLE),
    )
    msi = fdt.Node(
        f"msi@{P.MSI_OFFSET:x}",
        fdt.PropStrings("compatible", "fsl,mpic-msi"),
        fdt.PropWords("reg", P.MSI_OFFSET, P.MSI_SIZE),
        fdt.PropWords("msi-available-ranges", 0, 0x100),
        fdt.PropWords("interrupt-parent", P.DT_MPIC_PHANDLE),
        fdt.PropWords("interrupts", *(w for n in range(0xE0, 0xE8) for w in (n, 0))),
        fdt.PropWords("phandle", P.DT_MSI_PHANDLE),
    )
    uart = fdt.Node(
        UART_NODE,
        fdt.PropStrings("compatible", "ns16550"),
        fdt.PropStrings("device_type", "serial"),
        fdt.PropWords("reg", P.UART0_OFFSET, P.UART_SIZE),
        fdt.PropWords("cell-index", 0),
        fdt.PropWords("clock-frequency", P.BUS_HZ),
        *_irq(P.UART_IRQ),
    )
    guts = fdt.Node(
        f"global-utilities@{P.GUTS_OFFSET:x}",
        fdt.PropStrings("compatible", *P.DT_GUTS_COMPATIBLE),
        fdt.PropWords("reg", P.GUTS_OFFSET, P.GUTS_SIZE),
        fdt.Property("fsl,has-rstcr"),
    )
    gpio = fdt.Node(
        f"gpio@{P.GPIO_OFFSET:x}",
        fdt.PropStrings("compatible", "fsl,qoriq-gpio"),
        fdt.PropWords("reg", P.GPIO_OFFSET, P.GPIO_SIZE),
        *_irq(P.GPIO_IRQ),
        fdt.PropWords("#gpio-cells", 2),
        fdt.Property("gpio-controller"),
        fdt.PropWords("phandle", P.DT_GPIO_PHANDLE),
    )
    return fdt.Node(
        SOC_NODE,
        fdt.PropStrings("device_type", "soc"),
        fdt.PropStrings("compatible", "fsl,mpc8544-immr", "simple-bus"),
        fdt.PropWords("#address-cells", 1),
        fdt.PropWords("#size-cells", 1),
        fdt.PropWords("ranges", 0, 0, P.CCSR_BASE, P.CCSR_SIZE),
        fdt.PropWords("bus-frequency", 0),
        mpic, msi, uart, guts, gpio, power_off_node(),
    )


def power_off_node() -> fdt.Node:
    """``power-off``: GPIO pin 0 powers the machine off.  Under the soc node, as QEMU has it:
    Linux on PowerPC creates devices only for the children of buses its platform lists (the
    qemu-e500 platform: "soc", "simple-bus"), never for root nodes.  dtc's simple_bus_reg
    check wants a ``reg`` on every simple-bus child and warns about this one, as it does about
    QEMU's own tree: the one warning the machine's tree has (PLATFORM.md, "Device tree")."""
    return fdt.Node(
        "power-off",
        fdt.PropStrings("compatible", "gpio-poweroff"),
        fdt.PropWords("gpios", P.DT_GPIO_PHANDLE, 0, 0),
    )


def aliases_node() -> fdt.Node:
    return fdt.Node("aliases", fdt.PropStrings("serial0", f"/{SOC_NODE}/{UART_NODE}"))


def byte_channel_interrupts(mpic_phandle: int = P.DT_MPIC_PHANDLE) -> list[fdt.Property]:
    """The console byte channel's receive and transmit interrupts (Linux's ehv_bytechan maps
    the first as rx, the second as tx)."""
    return [fdt.PropWords("interrupt-parent", mpic_phandle),
            fdt.PropWords("interrupts", P.BYTE_CHANNEL_RX_IRQ, P.DT_IRQ_LEVEL_HIGH,
                          P.BYTE_CHANNEL_TX_IRQ, P.DT_IRQ_LEVEL_HIGH)]
