-- A browser's request head for an avatar in an <img> tag (13 fields), for wrk -s: what the express lane
-- meets in practice. Used by scripts/bench-callgrind.sh (WRKARGS="-s scripts/browser.lua").
wrk.headers["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
wrk.headers["Accept"] = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"
wrk.headers["Accept-Language"] = "en-US,en;q=0.9"
wrk.headers["Accept-Encoding"] = "gzip, deflate, br, zstd"
wrk.headers["Referer"] = "https://cloud.example.com/home"
wrk.headers["Sec-Fetch-Dest"] = "image"
wrk.headers["Sec-Fetch-Mode"] = "no-cors"
wrk.headers["Sec-Fetch-Site"] = "same-origin"
wrk.headers["sec-ch-ua"] = '"Chromium";v="131", "Not_A Brand";v="24"'
wrk.headers["sec-ch-ua-mobile"] = "?0"
wrk.headers["sec-ch-ua-platform"] = '"Linux"'
wrk.headers["Cookie"] = "cloudreve-session=MTczMjg0OTg5MXxEdi1CQkFFQ180SUFBUkFCRUFBQV9fOF9fNEFBQkFaemRISnBibWM"
