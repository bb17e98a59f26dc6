//! The APR sensor firmware on a real board: an STM32F411CE "Black Pill"
//! with a WIZnet W5500 Ethernet chip, an ADS1115 for the 4–20 mA loops, a
//! MAX3485 for the Modbus probe and the macro-meter's pulse contact. Why
//! this board: README.
//!
//! # Layout
//! - `main.rs` (this file): pins, bring-up, and the main loop, which is the
//!   only place the watchdog is fed.
//! - [`provision`]: the const configuration block (ids, broker, login).
//! - [`station`]: scheduler → drivers → aggregates → packs → outbox → `up`.
//! - [`net`]: W5500 link, DHCP, SNTP and the MQTT connection.
//! - [`mqtt`]: the MQTT 3.1.1 session, a state machine without I/O.
//! - [`outbox_flash`]: the outbox's three 128 KiB sectors of internal flash
//!   as an `embedded-storage` NOR flash.
//! - [`rs485`]: the UART and the transceiver's DE pin as an `embedded-io`
//!   port.
//! - [`backup`]: the totaliser in the RTC backup registers.
//! - [`clock`]: monotonic time, delays, and Unix time from SNTP.
//!
//! # Pins
//!
//! | pin | use |
//! | --- | --- |
//! | PA4 / PA5 / PA6 / PA7 | W5500 CS / SCK / MISO / MOSI (SPI1, 8 MHz) |
//! | PB0 | W5500 RST (active low) |
//! | PB6 / PB7 | ADS1115 SCL / SDA (I2C1, 100 kHz), address 0x48 |
//! | PA2 / PA3 / PA1 | MAX3485 DI / RO / DE+/RE (USART2, 9600 8N1) |
//! | PB8 | macro-meter pulse contact to ground (pull-up, optocoupled) |
//! | PB9 | pump contactor auxiliary contact to ground (pull-up) |
//! | PB1 | supply voltage through 100 kΩ / 10 kΩ (ADC1 IN9) |
//! | PB13 / PB14 | turbidimeter / probe supply switch (high = on) |
//! | PC13 | on-board LED: on while the MQTT session is up |
#![no_std]
#![no_main]
#![deny(unsafe_code)]

mod backup;
mod clock;
mod mqtt;
mod net;
mod outbox_flash;
mod provision;
mod rs485;
mod station;

use core::panic::PanicInfo;

use apr_firmware::analog::{FrontEnd, LoopAdc};
use apr_firmware::config::Settings;
use apr_firmware::flow::{ActiveLevel, Debouncer, KFactor, PulseInput, Totaliser};
use apr_firmware::modbus_probe::{ModbusProbe, ProbeConfig};
use apr_firmware::outbox::Outbox;
use apr_firmware::Identity;
use cortex_m::peripheral::SCB;
use cortex_m_rt::entry;
use embedded_hal_bus::spi::{ExclusiveDevice, NoDelay};
use stm32f4xx_hal::adc::config::{AdcConfig, SampleTime};
use stm32f4xx_hal::adc::Adc;
use stm32f4xx_hal::flash::LockedFlash;
use stm32f4xx_hal::gpio::{Analog, ErasedPin, Input, Output, Pin, PinState};
use stm32f4xx_hal::i2c::{I2c, Mode as I2cMode};
use stm32f4xx_hal::pac;
use stm32f4xx_hal::prelude::*;
use stm32f4xx_hal::rcc::Config as ClockConfig;
use stm32f4xx_hal::serial::config::Config as SerialConfig;
use stm32f4xx_hal::serial::Serial;
use stm32f4xx_hal::signature::Uid;
use stm32f4xx_hal::spi::Spi;
use stm32f4xx_hal::watchdog::IndependentWatchdog;

use crate::backup::BackupTotal;
use crate::clock::{CycleDelay, Monotonic, WallClock};
use crate::mqtt::{Credentials, Topics};
use crate::net::{Net, NetConfig, NetState};
use crate::outbox_flash::OutboxFlash;
use crate::station::{Parts, SiteInputs, Station};

/// Watchdog period: above the longest blocking step (a 128 KiB sector
/// erase, at most 4 s), far below anything a person would notice.
const WATCHDOG_MS: u32 = 8_000;
/// Core clock: 25 MHz crystal → 96 MHz.
const SYSCLK_MHZ: u32 = 96;
/// Pulse debounce: a reed contact bounces for a few ms.
const PULSE_DEBOUNCE_US: u32 = 20_000;

/// The W5500 on SPI1 with its chip select.
type W5500 =
    w5500_hl::ll::eh1::vdm::W5500<ExclusiveDevice<Spi<pac::SPI1>, Pin<'A', 4, Output>, NoDelay>>;
/// The network, with the W5500's reset pin.
type BoardNet = Net<W5500, Pin<'B', 0, Output>, CycleDelay>;
/// The station with this board's buses and pins.
type BoardStation = Station<
    I2c<pac::I2C1>,
    CycleDelay,
    rs485::Rs485<Serial<pac::USART2>, Pin<'A', 1, Output>>,
    Pin<'B', 8, Input>,
    OutboxFlash,
    ErasedPin<Output>,
>;

/// Pump contact and supply voltage.
struct Site {
    pump: Pin<'B', 9, Input>,
    adc: Adc<pac::ADC1>,
    vsense: Pin<'B', 1, Analog>,
}

impl SiteInputs for Site {
    fn pump_running(&mut self) -> Option<bool> {
        // Contact closed (to ground) = contactor pulled in.
        Some(self.pump.is_low())
    }

    fn supply_volts(&mut self) -> Option<f32> {
        let raw = self.adc.convert(&self.vsense, SampleTime::Cycles_480);
        let mv = self.adc.sample_to_millivolts(raw);
        Some(f32::from(mv) / 1000.0 * provision::BATTERY_DIVIDER)
    }
}

/// A locally administered MAC address and a DHCP seed from the chip's
/// 96-bit unique id (FNV-1a), so no two boards share one and none needs
/// provisioning.
fn mac_and_seed() -> ([u8; 6], u64) {
    let uid = Uid::get();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    };
    uid.x().to_le_bytes().into_iter().for_each(&mut eat);
    uid.y().to_le_bytes().into_iter().for_each(&mut eat);
    eat(uid.waf_num());
    uid.lot_num().bytes().for_each(&mut eat);
    let b = h.to_le_bytes();
    ([0x02, b[0], b[1], b[2], b[3], b[4]], h)
}

/// Something that must not happen did: reset and start over.
fn restart() -> ! {
    SCB::sys_reset()
}

#[entry]
fn main() -> ! {
    let (Some(dp), Some(mut cp)) = (pac::Peripherals::take(), cortex_m::Peripherals::take()) else {
        restart()
    };

    // The watchdog first, so a hang anywhere in bring-up resets too.
    let mut watchdog = IndependentWatchdog::new(dp.IWDG);
    watchdog.start(WATCHDOG_MS.millis());

    let mut backup = BackupTotal::new(dp.RTC, &dp.RCC, &dp.PWR);
    let mut rcc = dp
        .RCC
        .freeze(ClockConfig::hse(25.MHz()).sysclk(SYSCLK_MHZ.MHz()));
    cp.DCB.enable_trace();
    cp.DWT.enable_cycle_counter();
    let sysclk = rcc.clocks.sysclk().raw();
    let delay = CycleDelay::new(sysclk);
    let mut mono = Monotonic::new(sysclk);

    let gpioa = dp.GPIOA.split(&mut rcc);
    let gpiob = dp.GPIOB.split(&mut rcc);
    let gpioc = dp.GPIOC.split(&mut rcc);

    // 4–20 mA loops on the ADS1115.
    let i2c = I2c::new(
        dp.I2C1,
        (gpiob.pb6, gpiob.pb7),
        I2cMode::standard(100.kHz()),
        &mut rcc,
    );
    let adc = LoopAdc::new(i2c, Default::default(), delay, FrontEnd::default()).ok();

    // The Modbus probe on RS-485.
    let Ok(uart) = Serial::<_, u8>::new(
        dp.USART2,
        (gpioa.pa2, gpioa.pa3),
        SerialConfig::default().baudrate(provision::PROBE_BAUD.bps()),
        &mut rcc,
    ) else {
        restart()
    };
    let line = rs485::Rs485::new(uart, gpioa.pa1.into_push_pull_output());
    let probe = ModbusProbe::new(
        line,
        delay,
        ProbeConfig {
            unit: provision::PROBE_UNIT,
            ..ProbeConfig::default()
        },
    );

    // Pulses, pump, supply voltage, switched supplies.
    let pulses = PulseInput::new(
        gpiob.pb8.into_pull_up_input(),
        Debouncer::new(PULSE_DEBOUNCE_US, ActiveLevel::Low),
    );
    let mut site = Site {
        pump: gpiob.pb9.into_pull_up_input(),
        adc: Adc::new(dp.ADC1, true, AdcConfig::default(), &mut rcc),
        vsense: gpiob.pb1.into_analog(),
    };
    let supplies = [
        gpiob.pb13.into_push_pull_output().erase(),
        gpiob.pb14.into_push_pull_output().erase(),
    ];
    let mut led = gpioc.pc13.into_push_pull_output_in_state(PinState::High);

    // Settings until the retained `config` arrives; the totaliser as saved.
    let mut settings = Settings::default();
    if let Some(k) = KFactor::from_litres(provision::K_FACTOR_ML_PER_PULSE as f32 / 1000.0) {
        settings.k_factor = k;
    }
    let totaliser = match backup.restore(settings.k_factor) {
        Some(mut t) => {
            // The pulse count restarts from zero with the chip.
            t.rebase_counter(0);
            t
        }
        None => Totaliser::new(settings.k_factor),
    };

    // The outbox on internal flash: whatever a power cut left is scanned.
    let Some(flash) = OutboxFlash::new(LockedFlash::new(dp.FLASH)) else {
        restart()
    };
    let Ok((outbox, _mounted)) = Outbox::mount(flash, 0, outbox_flash::SECTORS) else {
        restart()
    };

    let Ok(identity) = Identity::new(provision::APR_ID, provision::DEVICE_ID) else {
        restart()
    };
    // The station and the network live in statics (`.bss`), so the build's
    // RAM figure counts them and the stack holds only call frames.
    let station = cortex_m::singleton!(: BoardStation = Station::new(
        Parts {
            adc,
            probe,
            pulses,
            supplies,
            totaliser,
            outbox,
            settings,
            identity,
        },
        mono.now_us() / 1000,
    ));
    let Some(station) = station else { restart() };

    // The W5500.
    let spi = dp.SPI1.spi(
        (Some(gpioa.pa5), Some(gpioa.pa6), Some(gpioa.pa7)),
        embedded_hal::spi::MODE_0,
        8.MHz(),
        &mut rcc,
    );
    let cs = gpioa.pa4.into_push_pull_output_in_state(PinState::High);
    let Ok(spi) = ExclusiveDevice::new_no_delay(spi, cs);
    let w5500 = w5500_hl::ll::eh1::vdm::W5500::new(spi);
    let (mac, seed) = mac_and_seed();
    let net = cortex_m::singleton!(: BoardNet = Net::new(
        w5500,
        gpiob.pb0.into_push_pull_output_in_state(PinState::High),
        delay,
        NetConfig {
            mac,
            hostname: provision::DEVICE_ID,
            seed,
            broker: (provision::MQTT_BROKER, provision::MQTT_PORT),
            ntp_server: provision::NTP_SERVER,
            topics: Topics::new(provision::APR_ID, provision::DEVICE_ID),
            login: Credentials {
                client_id: provision::MQTT_USER,
                user: provision::MQTT_USER,
                password: provision::MQTT_PASSWORD,
            },
        },
    ));
    let Some(net) = net else { restart() };
    let mut wall = WallClock::default();

    loop {
        let now_us = mono.now_us();
        let now_ms = now_us / 1000;
        station.poll_pulses(now_us);
        if station.run_due(now_ms, wall.unix_s(now_us), &mut site) {
            backup.save(station.totaliser());
        }
        net.poll(now_ms, &mut wall, |msg| station.on_message(msg, now_ms));
        station.send(net, now_ms);
        if net.state() == NetState::Online {
            led.set_low();
        } else {
            led.set_high();
        }
        // Fed only here: a pass that hangs or loops elsewhere resets.
        watchdog.feed();
    }
}

#[panic_handler]
fn panic(_: &PanicInfo) -> ! {
    // Nothing to tell on a board without a console: start over. The outbox
    // and the totaliser are in flash and backup registers.
    restart()
}
