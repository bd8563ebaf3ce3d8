// All labels of the wall screen, one dictionary per language (Vietnamese is the default).
export const TZ = "Asia/Ho_Chi_Minh";

export const TEXT = {
  vi: {
    title: "IOC Hậu Giang — Màn hình điều hành", lastUpdate: "Cập nhật lúc", map: "Bản đồ",
    alerts: "Cảnh báo đang hoạt động", water: "Mực nước", rain: "Lượng mưa", lighting: "Chiếu sáng",
    traffic: "Giao thông", incidents: "Sự cố", reports: "Phản ánh", report: "Phản ánh", reported: "Gửi lúc", kpis: "Chỉ số", ack: "Tiếp nhận", silence: "Tắt tiếng 2 giờ",
    openIncident: "Mở sự cố", acked: "đã tiếp nhận", silenced: "đã tắt tiếng", mute: "Tắt âm",
    unmute: "Bật âm", all: "Tất cả", city: "Thành phố", ward: "Phường/xã", domain: "Lĩnh vực",
    noAlerts: "Không có cảnh báo.", noIncidents: "Không có sự cố.", signIn: "Đăng nhập",
    tokenPrompt: "Nhập mã truy cập:", signOut: "Đăng xuất", badToken: "Mã truy cập không hợp lệ.",
    disconnected: "MẤT KẾT NỐI — dữ liệu có thể đã cũ, đang kết nối lại…",
    stale: (s) => `DỮ LIỆU CŨ — không nhận được tín hiệu trong ${s} giây`,
    critical: "Nghiêm trọng", warning: "Cảnh báo", info: "Thông tin", firing: "Đang báo động",
    normal: "Bình thường", alert: "Báo động", offline: "Mất kết nối", online: "Trực tuyến",
    overdue: "Quá hạn", left: "còn", onTime: "Đúng hạn", satisfaction: "Hài lòng", target: "mục tiêu",
    on: "Sáng", off: "Tắt", faulty: "Hỏng", tonightKwh: "kWh tối nay", lastWeekKwh: "tuần trước", congestion: "Ùn tắc", close: "Đóng", device: "Thiết bị",
    agencyView: "Sự cố của đơn vị", role: "Vai trò", noData: "Chưa có dữ liệu", status: "Trạng thái",
    deadline: "Hạn xử lý", station: "Trạm",
    statuses: { new: "Mới", dispatched: "Đã giao", accepted: "Đã nhận", in_progress: "Đang xử lý",
                resolved: "Đã xử lý", closed: "Đã đóng", rejected: "Từ chối" },
    domains: { flood: "Ngập", rain: "Mưa", lighting: "Chiếu sáng", traffic: "Giao thông", salinity: "Xâm nhập mặn" },
    salinity: "Độ mặn",
  },
  en: {
    title: "Hậu Giang IOC — Operations wall", lastUpdate: "Last update", map: "Map",
    alerts: "Active alerts", water: "Water level", rain: "Rainfall", lighting: "Street lighting",
    traffic: "Traffic", incidents: "Incidents", reports: "Reports", report: "Report", reported: "Sent at", kpis: "KPIs", ack: "Acknowledge", silence: "Silence 2 h",
    openIncident: "Open incident", acked: "acknowledged", silenced: "silenced", mute: "Mute",
    unmute: "Unmute", all: "All", city: "City", ward: "Ward", domain: "Domain",
    noAlerts: "No active alerts.", noIncidents: "No incidents.", signIn: "Sign in",
    tokenPrompt: "Enter your access token:", signOut: "Sign out", badToken: "Invalid access token.",
    disconnected: "DISCONNECTED — data may be out of date, reconnecting…",
    stale: (s) => `STALE — no frame received for ${s} s`,
    critical: "Critical", warning: "Warning", info: "Info", firing: "Firing",
    normal: "Normal", alert: "Alert", offline: "Offline", online: "Online",
    overdue: "Overdue", left: "left", onTime: "On time", satisfaction: "Satisfaction", target: "target",
    on: "On", off: "Off", faulty: "Faulty", tonightKwh: "kWh tonight", lastWeekKwh: "last week", congestion: "Congestion", close: "Close", device: "Device",
    agencyView: "Our agency's incidents", role: "Role", noData: "No data yet", status: "Status",
    deadline: "Deadline", station: "Station",
    statuses: { new: "New", dispatched: "Dispatched", accepted: "Accepted", in_progress: "In progress",
                resolved: "Resolved", closed: "Closed", rejected: "Rejected" },
    domains: { flood: "Flood", rain: "Rain", lighting: "Lighting", traffic: "Traffic", salinity: "Salinity" },
    salinity: "Salinity",
  },
};

let lang = localStorage.getItem("ioc.lang") === "en" ? "en" : "vi";
export const getLang = () => lang;
export function setLang(l) { lang = l; localStorage.setItem("ioc.lang", l); }
export const t = (key, ...args) => {
  const v = TEXT[lang][key];
  return typeof v === "function" ? v(...args) : v ?? key;
};
// Formatters are cached: building an Intl.DateTimeFormat costs far more than using one, and the
// page formats times on every frame.
const formatters = new Map();
function formatter(kind) {
  const key = `${lang}/${kind}`;
  let f = formatters.get(key);
  if (!f) {
    const opts = { timeZone: TZ, hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false };
    if (kind !== "time") Object.assign(opts, { day: "2-digit", month: "2-digit" });
    if (kind === "clock") opts.weekday = "short";
    formatters.set(key, f = new Intl.DateTimeFormat(lang === "vi" ? "vi-VN" : "en-GB", opts));
  }
  return f;
}
export function fmtTime(value, withDate = false) {
  if (!value) return "—";
  const d = value instanceof Date ? value : new Date(value);
  if (isNaN(d)) return String(value);
  return formatter(withDate ? "date" : "time").format(d);
}
export const fmtClock = (d) => formatter("clock").format(d);
export function fmtDuration(ms) {
  const m = Math.round(Math.abs(ms) / 60000);
  return m >= 60 ? `${Math.floor(m / 60)} h ${m % 60} ph` : `${m} ph`;
}
