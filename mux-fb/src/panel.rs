//! The panel: the physical display the foreground VP is shown on.

use crate::geometry::Geometry;

/// A display the compositor writes frames into.
pub trait Panel: Send {
    fn geometry(&self) -> Geometry;
    /// What the panel shows now.
    fn pixels(&self) -> &[u8];
    fn pixels_mut(&mut self) -> &mut [u8];
    /// "headless 720x1280", "fbdev /dev/fb0 (bochs-drm) 720x1280".
    fn describe(&self) -> String;
    /// Refresh rate in Hz.
    fn refresh_hz(&self) -> u32 {
        60
    }
    /// Turn the display off or on (FBIOBLANK on a real panel).
    fn set_blank(&mut self, _blank: bool) -> std::io::Result<()> {
        Ok(())
    }
}

/// A panel in memory, for hosts with no display: what it "shows" is what
/// screenshots of the panel return.
pub struct HeadlessPanel {
    geometry: Geometry,
    pixels: Vec<u8>,
    blank: bool,
}

impl HeadlessPanel {
    pub fn new(geometry: Geometry) -> Self {
        Self {
            geometry,
            pixels: vec![0; geometry.size()],
            blank: false,
        }
    }
    pub fn is_blank(&self) -> bool {
        self.blank
    }
}

impl Panel for HeadlessPanel {
    fn geometry(&self) -> Geometry {
        self.geometry
    }
    fn pixels(&self) -> &[u8] {
        &self.pixels
    }
    fn pixels_mut(&mut self) -> &mut [u8] {
        &mut self.pixels
    }
    fn describe(&self) -> String {
        format!("headless {}x{}", self.geometry.width, self.geometry.height)
    }
    fn set_blank(&mut self, blank: bool) -> std::io::Result<()> {
        self.blank = blank;
        Ok(())
    }
}

/// What `--panel` asks for: `headless:WxH` or `fbdev:/dev/fbN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PanelSpec {
    Headless(Geometry),
    Fbdev(std::path::PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PanelSpecError {
    #[error(
        "invalid panel '{0}': use headless:WIDTHxHEIGHT (e.g. headless:720x1280) or fbdev:/dev/fb0"
    )]
    Syntax(String),
    #[error(transparent)]
    Size(#[from] crate::geometry::BadSize),
}

impl PanelSpec {
    pub fn parse(s: &str) -> Result<Self, PanelSpecError> {
        match s.split_once(':') {
            Some(("headless", size)) => Ok(PanelSpec::Headless(Geometry::parse(size)?)),
            Some(("fbdev", path)) if path.starts_with('/') => {
                Ok(PanelSpec::Fbdev(std::path::PathBuf::from(path)))
            }
            _ => Err(PanelSpecError::Syntax(s.to_string())),
        }
    }

    /// The default: the real panel where /dev/fb0 exists, else headless 720x1280.
    pub fn default_for_host() -> Self {
        if std::path::Path::new("/dev/fb0").exists() {
            PanelSpec::Fbdev("/dev/fb0".into())
        } else {
            PanelSpec::Headless(Geometry::new(720, 1280))
        }
    }

    pub fn open(&self) -> std::io::Result<Box<dyn Panel>> {
        Ok(match self {
            PanelSpec::Headless(g) => Box::new(HeadlessPanel::new(*g)),
            PanelSpec::Fbdev(p) => Box::new(crate::fbdev::FbdevPanel::open(p)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panel_specs() {
        assert_eq!(
            PanelSpec::parse("headless:720x1280").unwrap(),
            PanelSpec::Headless(Geometry::new(720, 1280))
        );
        assert_eq!(
            PanelSpec::parse("fbdev:/dev/fb0").unwrap(),
            PanelSpec::Fbdev("/dev/fb0".into())
        );
        for bad in ["", "headless", "headless:big", "fbdev:fb0", "vga:1"] {
            let e = PanelSpec::parse(bad).unwrap_err();
            assert!(e.to_string().contains("720x1280"), "{bad}: {e}");
        }
    }

    #[test]
    fn headless_panel_is_memory() {
        let mut p = HeadlessPanel::new(Geometry::new(16, 16));
        assert_eq!(p.pixels().len(), 16 * 16 * 4);
        p.pixels_mut()[0] = 7;
        assert_eq!(p.pixels()[0], 7);
        p.set_blank(true).unwrap();
        assert!(p.is_blank());
        assert_eq!(p.describe(), "headless 16x16");
    }
}
